"""Writing records to Kafka in the order given, every one delivered or an error.

A plain producer may reorder a partition's records: with several requests in flight, a batch
that is retried (a broker starting, a leader moving) lands after the next one. The trainer's
windows rely on each partition carrying its records in event-time order, so a reordered load
turns on-time samples into late ones, differently from run to run. The idempotent producer keeps
the order across retries (and writes each record once), so every loader uses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from millrace.kafka import Brokers, client_config


class OrderedProducer:
    """An idempotent producer that records delivery errors; :meth:`flush` raises on any."""

    def __init__(self, brokers: Brokers, **extra: Any) -> None:
        config = {"linger.ms": 10, "compression.type": "lz4", **extra}
        self._producer = Producer(client_config(brokers, **{**config, "enable.idempotence": True}))
        self.errors: list[str] = []
        self.sent = 0

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self.errors.append(str(err))

    def produce(self, topic: str, value: bytes, key: bytes | str | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._delivered)
                break
            except BufferError:  # the queue is full: let deliveries drain it
                self._producer.poll(0.1)
        self.sent += 1
        if self.sent % 1000 == 0:
            self._producer.poll(0)

    def poll(self, timeout: float = 0.0) -> None:
        self._producer.poll(timeout)

    def flush(self, timeout: float = 60.0) -> None:
        left = self._producer.flush(timeout)
        if left or self.errors:
            raise KafkaException(
                f"{left} records undelivered after {timeout:g} s; errors: {self.errors[:3]}"
            )


def produce_all(
    brokers: Brokers, rows: Iterable[tuple[str, bytes, bytes | str | None]], timeout: float = 60.0
) -> int:
    """Write ``(topic, value, key)`` rows in their order; how many. Raises if any is lost."""
    producer = OrderedProducer(brokers)
    for topic, value, key in rows:
        producer.produce(topic, value, key)
    producer.flush(timeout)
    return producer.sent
