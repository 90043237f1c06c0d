"""Kafka helpers: client configs, topic creation and readiness."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from millrace.settings import CommonSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 3
    config: dict[str, str] = field(default_factory=dict)


def admin(bootstrap: str, **extra: str | int) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **extra})


def wait_for_broker(bootstrap: str, timeout: float = 60.0) -> None:
    """Block until an AdminClient gets metadata from the broker, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    # Refused connections are expected while the broker starts; the timeout reports the last.
    client = admin(bootstrap, log_level=0)
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if client.list_topics(timeout=2).brokers:
                return
        except KafkaException as exc:
            last = exc
        time.sleep(0.5)
    raise TimeoutError(f"Kafka at {bootstrap} did not answer within {timeout:.0f}s: {last}")


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec], timeout: float = 30.0) -> None:
    """Create the topics that do not exist yet (replication factor 1 on a local broker)."""
    client = admin(bootstrap)
    existing = set(client.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=-1, config=s.config)
        for s in specs
        if s.name not in existing
    ]
    if not wanted:
        return
    for name, future in client.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result()
            log.info("created topic", extra={"topic": name})
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    _wait_for_metadata(client, [t.topic for t in wanted], timeout)


def _wait_for_metadata(client: AdminClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topics = client.list_topics(timeout=timeout).topics
        if all(n in topics and not topics[n].error for n in names):
            return
        time.sleep(0.2)
    raise TimeoutError(f"topics not ready: {names}")


def pipeline_topics(settings: CommonSettings, partitions: int = 3) -> list[TopicSpec]:
    """The topics of the data flow for one settings object (see README, Topics)."""
    return [
        TopicSpec(settings.events_topic, partitions),
        TopicSpec(settings.features_topic, partitions),
        TopicSpec(settings.labels_topic, partitions),
        TopicSpec(settings.dead_letter_topic, 1),
        TopicSpec(settings.model_events_topic, 1, {"cleanup.policy": "compact"}),
        TopicSpec(settings.predictions_topic, partitions),
    ]


def consumer_config(bootstrap: str, group: str, **extra: object) -> dict[str, object]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        **extra,
    }


def has_data(message: Message) -> bool:
    """True for a record; consumer errors are logged (end-of-partition events are not)."""
    error = message.error()
    if error is None:
        return True
    if error.code() != KafkaError._PARTITION_EOF:
        log.warning("consumer error", extra={"error": str(error)})
    return False
