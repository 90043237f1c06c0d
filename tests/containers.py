"""Kafka and Redis as containers, through testcontainers, on the compose file's images.

The broker gets the compose file's own ``KAFKA_*`` settings (one copy of them), with its
listener advertised at the host port it is published on; nothing is pulled: the images are the
official ones where a registry answered, or the stand-ins `make images` built.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import yaml
from testcontainers.core.container import DockerContainer

from millrace.kafka import wait_for_broker
from millrace.waiting import wait_until
from millrace_stack.processes import free_port

# Ryuk, testcontainers' reaper, is an image of its own that no registry here serves; the
# fixtures stop their containers themselves.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def compose_kafka_environment() -> dict[str, str]:
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["kafka"]
    return {name: str(value) for name, value in service["environment"].items()}


@contextmanager
def kafka_container(image: str) -> Iterator[str]:
    """A single-node KRaft broker; yields its bootstrap address on the host."""
    port = free_port()
    environment = compose_kafka_environment() | {
        # As compose has them: the broker reaches itself on PLAINTEXT inside the container (its
        # transaction coordinator writes markers that way), clients on HOST, published.
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:29092",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://localhost:9092,HOST://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_LOG_DIRS": "/tmp/kafka-logs",
        # As the local launcher has them: internal topics of 3 partitions load at once on a
        # fresh broker (50 each otherwise), which the tests start often.
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "3",
        "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "3",
        "KAFKA_NUM_PARTITIONS": "3",
    }
    container = DockerContainer(image).with_bind_ports(29092, port)
    for name, value in environment.items():
        container = container.with_env(name, value)
    with container:
        bootstrap = f"127.0.0.1:{port}"
        wait_for_broker(bootstrap, timeout=120)
        yield bootstrap


@contextmanager
def redis_container(image: str) -> Iterator[str]:
    """A Redis server; yields its URL on the host."""
    with DockerContainer(image).with_exposed_ports(6379) as container:
        url = f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
        client = redis.Redis.from_url(url)
        wait_until(client.ping, 30, f"Redis at {url}", errors=(redis.ConnectionError,))
        client.close()
        yield url
