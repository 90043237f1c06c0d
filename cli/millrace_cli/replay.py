"""The replay producer: publish events in event-time order at a chosen speed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from millrace.kafka import Brokers, client_config

log = logging.getLogger(__name__)


def replay(
    brokers: Brokers,
    topic: str,
    events: Sequence[dict[str, Any]],
    speed: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Produce ``events`` keyed by their ``key``; ``speed`` is event time per wall time
    (3600 = one hour of flights per second), 0 = as fast as the broker takes them."""
    producer = Producer(
        client_config(
            brokers,
            **{"enable.idempotence": True, "linger.ms": 10, "compression.type": "lz4"},
        )
    )
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(str(err))

    first_ts = events[0]["ts"] if events else 0
    started = time.monotonic()
    for i, event in enumerate(events):
        if speed > 0:
            due = started + (event["ts"] - first_ts) / 1000.0 / speed
            wait = due - time.monotonic()
            if wait > 0:
                producer.poll(0)
                sleep(wait)
        while True:
            try:
                producer.produce(topic, orjson.dumps(event), event["key"], on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
            if on_progress:
                on_progress(i)
    left = producer.flush(60)
    if left or errors:
        raise KafkaException(f"replay lost {left} undelivered events; errors: {errors[:3]}")
    if on_progress:
        on_progress(len(events))
    return len(events)
