"""Real Kafka and Redis for the tests.

In order of preference: an existing cluster (``KAFKA_BOOTSTRAP`` / ``REDIS_URL``), testcontainers
when a Docker engine answers, otherwise the project's own launcher (the real broker from Maven
Central jars and Debian's redis-server) as local processes on free ports.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from millrace_stack.brokers import KafkaNode, RedisNode
from millrace_stack.processes import ProcessTable, free_port


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@pytest.fixture(scope="session")
def infra_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="session")
def kafka_bootstrap(infra_dir: Path) -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield os.environ["KAFKA_BOOTSTRAP"]
        return
    if _docker_engine():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    procs = ProcessTable(infra_dir)
    node = KafkaNode(infra_dir / "kafka", free_port(), free_port())
    node.start(procs)
    yield node.bootstrap
    # Destroy clients that tests left in reference cycles while the broker still answers, so
    # they do not log refused connections after it is gone.
    gc.collect()
    procs.stop("kafka")


@pytest.fixture(scope="session")
def redis_url(infra_dir: Path) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    if _docker_engine():
        from testcontainers.redis import RedisContainer

        with RedisContainer() as container:
            yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
        return
    procs = ProcessTable(infra_dir)
    node = RedisNode(infra_dir / "redis", free_port())
    node.start(procs)
    yield node.url
    procs.stop("redis")


@pytest.fixture
def prefix() -> str:
    """A topic and Redis-key prefix of this test's own, so runs never see each other's data."""
    return f"t{uuid.uuid4().hex[:10]}."
