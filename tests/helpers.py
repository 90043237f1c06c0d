"""Small helpers the integration and end-to-end tests share."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from confluent_kafka import Consumer, Message


def read_topic(
    bootstrap: str, topic: str, expect: int | None = None, idle: float = 3.0, timeout: float = 120.0
) -> list[Message]:
    """Committed messages on ``topic``: until ``expect`` arrived or none came for ``idle`` s."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
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


def wait_until(
    check: Callable[[], object], timeout: float, what: str, interval: float = 0.5
) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@contextmanager
def serve(app: object, port: int) -> Iterator[str]:
    """Serve an ASGI app over real HTTP on 127.0.0.1:``port`` in a thread; yields its URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started, 30, f"the server on {url}", 0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
