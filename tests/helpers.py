"""Small helpers the integration and end-to-end tests share."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from starlette.types import ASGIApp

from millrace import waiting
from millrace.health import BackgroundServer
from millrace.kafka import Brokers, client_config, consumer_config, watermarks
from millrace.settings import CommonSettings
from millrace_featurizer.settings import FeaturizerSettings


def read_topic(
    brokers: Brokers,
    topic: str,
    expect: int | None = None,
    idle: float = 3.0,
    timeout: float = 120.0,
) -> list[Message]:
    """Committed messages on ``topic``: until ``expect`` arrived or none came for ``idle`` s."""
    consumer = Consumer(consumer_config(brokers, f"test-reader-{uuid.uuid4().hex}"))
    consumer.subscribe([topic])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = [m for m in consumer.consume(1000, timeout=0.5) if not m.error()]
            if batch:
                messages += batch
                last = time.monotonic()
            if expect is not None and len(messages) >= expect:
                break
            if expect is None and time.monotonic() - last > idle:
                break
    finally:
        consumer.close()
    return messages


class CommittedCount:
    """How many committed messages ``topic`` holds, read on as it grows (one reader)."""

    def __init__(self, brokers: Brokers, topic: str) -> None:
        self._consumer = Consumer(consumer_config(brokers, f"test-counter-{uuid.uuid4().hex}"))
        self._consumer.subscribe([topic])
        self.count = 0

    def read(self, idle: float = 0.0) -> int:
        """The count after what has arrived; with ``idle``, after none came for that long."""
        last = time.monotonic()
        while True:
            batch = [m for m in self._consumer.consume(1000, timeout=0.2) if not m.error()]
            self.count += len(batch)
            if batch:
                last = time.monotonic()
            elif time.monotonic() - last >= idle:
                return self.count

    def close(self) -> None:
        self._consumer.close()


def wait_until(
    check: Callable[[], object], timeout: float, what: str, interval: float = 0.5
) -> object:
    """The library's wait, failing the test (not erroring it) when time runs out."""
    try:
        return waiting.wait_until(check, timeout, what, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


@contextmanager
def serve(app: ASGIApp, port: int) -> Iterator[str]:
    """Serve an ASGI app over real HTTP on 127.0.0.1:``port`` in a thread; yields its URL."""
    server = BackgroundServer(app, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def featurizer_settings(settings: CommonSettings, **changes: Any) -> FeaturizerSettings:
    """The featurizer's settings: ``settings`` (its broker, Redis, prefix, security) with
    ``changes``."""
    return FeaturizerSettings(**{**settings.model_dump(), **changes})


PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROJECT_SOURCES = [
    PROJECT_ROOT / "shared",
    *sorted((PROJECT_ROOT / "services").iterdir()),
    PROJECT_ROOT / "cli",
    PROJECT_ROOT / "infra",
    PROJECT_ROOT / "examples" / "flights",
]


def project_modules() -> dict[str, Path]:
    """Every module of the project's own packages (not the tests), by dotted name; not the
    project templates nor the Alembic scripts, which are files read by tools, not modules."""
    found = {}
    for source in PROJECT_SOURCES:
        for path in source.rglob("*.py"):
            parts = path.relative_to(source).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts and not any(
                p.startswith(".") or p in ("templates", "migrations") for p in parts
            ):
                found[".".join(parts)] = path
    return found


def end_offsets(bootstrap: Brokers, topic: str) -> dict[int, int]:
    reader = Consumer(consumer_config(bootstrap, "t-ends"))
    try:
        return {p: high for p, (_, high) in watermarks(reader, topic).items()}
    finally:
        reader.close()


def delete_all_records(bootstrap: Brokers, topic: str) -> None:
    """What retention does to old segments: the topic now starts at its end."""
    delete_records_below(bootstrap, topic, end_offsets(bootstrap, topic))


def delete_records_below(bootstrap: Brokers, topic: str, offsets: dict[int, int]) -> None:
    """Delete ``topic``'s records below ``offsets`` (partition -> offset), as retention would."""
    # Held until the futures complete: a client collected before then never completes them.
    admin = AdminClient(client_config(bootstrap))
    futures = admin.delete_records(
        [TopicPartition(topic, p, offset) for p, offset in offsets.items() if offset > 0],
        request_timeout=30,
    )
    for future in futures.values():
        future.result(30)


def processed_offsets(bootstrap: Brokers, group: str, topic: str) -> dict[int, int]:
    """partition -> the offset ``group`` committed last (what it has processed for good)."""
    reader = Consumer(consumer_config(bootstrap, group, **{"isolation.level": "read_uncommitted"}))
    try:
        ends = watermarks(reader, topic)
        found = reader.committed([TopicPartition(topic, p) for p in ends], timeout=30)
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}
    finally:
        reader.close()


def artifacts(count: int) -> list[bytes]:
    """``count`` distinct model artifacts: a logistic regression after 1, 2, ... samples."""
    from millrace.artifacts import dump_model
    from millrace.learners import LogisticRegression

    model, out = LogisticRegression(), []
    for i in range(count):
        model.learn_one({"x": float(i)}, float(i % 2))
        out.append(dump_model(model))
    return out
