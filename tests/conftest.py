"""Real Kafka and Redis for the tests.

In order of preference: an existing cluster (``KAFKA_BOOTSTRAP`` / ``REDIS_URL``), containers
through testcontainers when ``MILLRACE_TEST_CONTAINERS=1`` and a Docker engine holds the images
(tests/containers.py), otherwise the project's own launcher (the real broker from Maven Central
jars and Debian's redis-server) as local processes on free ports. The local processes stay the
default: they also give the SASL listener and the broker restarts some tests need.
"""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from millrace.signing import generate_keypair
from millrace_registry.schema import make_engine, migrate
from millrace_stack.brokers import KafkaNode, RedisNode
from millrace_stack.kafka_cluster import KafkaCluster
from millrace_stack.postgres import PostgresServer
from millrace_stack.processes import ProcessTable, free_port
from tests.containers import kafka_container, redis_container

# The tests' own secrets (never the public development values), seen by every settings object
# and every service process the tests start.
_PRIVATE, _PUBLIC = generate_keypair()
os.environ["MILLRACE_REGISTRY_TOKEN"] = secrets.token_urlsafe(24)
os.environ["MILLRACE_SIGNING_KEY"] = _PRIVATE
os.environ["MILLRACE_VERIFY_KEY"] = _PUBLIC
os.environ.pop("MILLRACE_DEV_MODE", None)
# The tests run with the demo's settings file, wherever they are started from.
os.environ["MILLRACE_CONFIG"] = str(Path(__file__).resolve().parents[1] / "millrace.toml")


#: The images the container fixtures run: the compose file's, named by the same variables.
# `make images` writes the names it built to .cache/images/images.env.
_BUILT = Path(__file__).resolve().parents[1] / ".cache" / "images" / "images.env"
_IMAGES = dict(
    line.split("=", 1) for line in (_BUILT.read_text().split() if _BUILT.exists() else [])
)
KAFKA_IMAGE = os.environ.get("KAFKA_IMAGE", _IMAGES.get("KAFKA_IMAGE", "apache/kafka:4.1.0"))
REDIS_IMAGE = os.environ.get("REDIS_IMAGE", _IMAGES.get("REDIS_IMAGE", "redis:7.4"))


def _docker_engine() -> bool:
    """Containers when asked for, where an engine answers and both images are there (nothing is
    pulled: on a machine without a registry, `make images` builds them)."""
    if os.environ.get("MILLRACE_TEST_CONTAINERS") != "1" or shutil.which("docker") is None:
        return False
    try:
        for image in (KAFKA_IMAGE, REDIS_IMAGE):
            inspect = ["docker", "image", "inspect", image]
            if subprocess.run(inspect, capture_output=True, timeout=20).returncode != 0:
                return False
    except subprocess.TimeoutExpired:
        return False
    return True


@pytest.fixture(scope="session")
def infra_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


#: The SASL/PLAIN user the local test broker accepts on its second listener.
SASL_USER, SASL_PASSWORD = "millrace-test", secrets.token_urlsafe(12)


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three KRaft nodes, each in a network namespace of its own (root and iproute2)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    work = tmp_path_factory.mktemp("kafka-cluster")
    procs = ProcessTable(work)
    cluster = KafkaCluster(work / "kafka")
    cluster.start(procs)
    try:
        yield cluster
    finally:
        cluster.stop(procs)


@pytest.fixture(scope="session")
def kafka_node(infra_dir: Path) -> Iterator[KafkaNode | None]:
    """The broker these tests started (None when they use an existing one or a container)."""
    if os.environ.get("KAFKA_BOOTSTRAP") or _docker_engine():
        yield None
        return
    procs = ProcessTable(infra_dir)
    node = KafkaNode(
        infra_dir / "kafka",
        free_port(),
        free_port(),
        sasl_port=free_port(),
        sasl_users={SASL_USER: SASL_PASSWORD},
    )
    node.start(procs)
    yield node
    # Destroy clients that tests left in reference cycles while the broker still answers, so
    # they do not log refused connections after it is gone.
    gc.collect()
    node.stop(procs)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_node: KafkaNode | None) -> Iterator[str]:
    if kafka_node is not None:
        yield kafka_node.bootstrap
    elif os.environ.get("KAFKA_BOOTSTRAP"):
        yield os.environ["KAFKA_BOOTSTRAP"]
    else:
        with kafka_container(KAFKA_IMAGE) as bootstrap:
            yield bootstrap


@pytest.fixture(scope="session")
def kafka_sasl(kafka_node: KafkaNode | None) -> tuple[str, str, str]:
    """(bootstrap, user, password) of a SASL_PLAINTEXT/PLAIN listener, from the local broker or
    ``KAFKA_SASL_BOOTSTRAP`` / ``KAFKA_SASL_USER`` / ``KAFKA_SASL_PASSWORD``."""
    if os.environ.get("KAFKA_SASL_BOOTSTRAP"):
        return (
            os.environ["KAFKA_SASL_BOOTSTRAP"],
            os.environ["KAFKA_SASL_USER"],
            os.environ["KAFKA_SASL_PASSWORD"],
        )
    if kafka_node is None or kafka_node.sasl_bootstrap is None:
        pytest.skip("no SASL listener: set KAFKA_SASL_BOOTSTRAP, _USER and _PASSWORD")
    return kafka_node.sasl_bootstrap, SASL_USER, SASL_PASSWORD


@pytest.fixture(scope="session")
def redis_url(infra_dir: Path) -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    if _docker_engine():
        with redis_container(REDIS_IMAGE) as url:
            yield url
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL as a local process (``POSTGRES_URL``: an existing server's
    superuser URL instead, databases made on it the same way)."""
    # As root the server runs as the postgres user, who cannot enter pytest's folders.
    data = Path(tempfile.mkdtemp(prefix="millrace-pg-"))
    data.chmod(0o755)
    procs = ProcessTable(data / "procs")
    server = PostgresServer(data / "data", free_port())
    server.start(procs)
    yield server
    procs.stop("postgres")
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_database(request: pytest.FixtureRequest) -> str | None:
    """The registry's database, once per backend: None (the embedded SQLite file) or a fresh
    PostgreSQL database, migrated as a deploy would (``millrace registry migrate``)."""
    if request.param == "sqlite":
        return None
    return new_registry_database(request.getfixturevalue("postgres_server"))


def new_registry_database(server: PostgresServer) -> str:
    url = server.create_database(f"registry_{uuid.uuid4().hex[:12]}")
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url
