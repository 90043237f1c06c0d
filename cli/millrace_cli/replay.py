"""The replay producer: publish events in event-time order at a chosen speed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from confluent_kafka import KafkaException

from millrace.kafka import Brokers
from millrace.loading import OrderedProducer

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
    producer = OrderedProducer(brokers)
    first_ts = events[0]["ts"] if events else 0
    started = time.monotonic()
    for i, event in enumerate(events):
        if speed > 0:
            due = started + (event["ts"] - first_ts) / 1000.0 / speed
            wait = due - time.monotonic()
            if wait > 0:
                producer.poll(0)
                sleep(wait)
        producer.produce(topic, orjson.dumps(event), event["key"])
        if on_progress and i % 1000 == 0:
            on_progress(i)
    try:
        producer.flush(60)
    except KafkaException as exc:
        raise KafkaException(f"replay lost events: {exc}") from exc
    if on_progress:
        on_progress(len(events))
    return len(events)
