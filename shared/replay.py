"""The replay producer: publish events in event-time order at a chosen speed."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer

log = logging.getLogger(__name__)


def replay(
    bootstrap: str,
    topic: str,
    events: Sequence[dict[str, Any]],
    speed: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Produce ``events`` keyed by their ``key``; ``speed`` is event time per wall time
    (3600 = one hour of flights per second), 0 = as fast as the broker takes them."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 10,
            "compression.type": "lz4",
        }
    )
    errors: list[str] = []

    def delivered(err, _msg) -> None:
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


def progress_printer(total: int, label: str = "replay") -> Callable[[int], None]:
    """Plain periodic lines (rate and ETA) when stderr is not a terminal; rich bar otherwise."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            "{task.fields[rate]}",
            TimeRemainingColumn(),
        )
        task = progress.add_task(label, total=total, rate="")
        progress.start()

        def update(done: int) -> None:
            speed = progress.tasks[0].speed
            progress.update(task, completed=done, rate=f"{speed:,.0f} events/s" if speed else "")
            if done >= total:
                progress.stop()

        return update

    started = time.monotonic()
    last = [0.0]

    def log_line(done: int) -> None:
        now = time.monotonic()
        if now - last[0] < 5 and done < total:
            return
        last[0] = now
        rate = done / max(now - started, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        log.info(f"{label}: {done}/{total} events, {rate:.0f}/s, eta {eta:.0f}s")

    return log_line
