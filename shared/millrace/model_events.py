"""The ``model-events`` topic: every alias move, keyed by model name, on a compacted topic.

The registry announces; predictors follow. Every move carries the alias's sequence number from
the registry's transaction. A follower starts at the topic's end: what an alias names now comes
from the registry (a replica never swaps through history on start-up), and the sequence numbers
let it ignore a move older than what it holds, however the announcements interleave.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from pydantic import TypeAdapter, ValidationError

from millrace.kafka import Brokers, client_config, consumer_config
from millrace.registry_models import AliasMove

log = logging.getLogger(__name__)
MOVE = TypeAdapter(AliasMove)


class ModelEventPublisher:
    def __init__(self, brokers: Brokers, topic: str) -> None:
        self.topic = topic
        self._producer = Producer(
            client_config(brokers, **{"enable.idempotence": True, "linger.ms": 0})
        )

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is pending and release the client (no logging after the broker goes)."""
        self._producer.flush(timeout)
        del self._producer

    def announce(self, move: AliasMove, timeout: float = 10.0) -> bool:
        """Publish one alias move and wait for the broker; False (logged) if it did not ack."""
        try:
            self._producer.produce(self.topic, key=move["model"], value=orjson.dumps(move))
            left = self._producer.flush(timeout)
        except (KafkaException, BufferError) as exc:
            log.error("model event not published", extra={"error": str(exc)})
            return False
        if left:
            log.error("model event not acknowledged in time", extra={"pending": left})
        return left == 0


class ModelEventFollower(threading.Thread):
    """Calls ``on_move(event)`` for every alias move announced from now on."""

    def __init__(self, brokers: Brokers, topic: str, on_move: Callable[[AliasMove], None]) -> None:
        super().__init__(name="model-events", daemon=True)
        self.topic = topic
        self.on_move = on_move
        self._stop_event = threading.Event()
        # Each follower reads everything itself; the group id is never committed.
        self._consumer = Consumer(consumer_config(brokers, f"model-events-{uuid.uuid4().hex}"))

    def start(self) -> None:
        """Pin the position to the topic's end now, before the caller reads the registry: every
        move announced after this call is delivered."""
        _, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, 0), timeout=30)
        self._consumer.assign([TopicPartition(self.topic, 0, high)])
        super().start()

    def run(self) -> None:
        while not self._stop_event.is_set():
            msg = self._consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                log.warning("model-events error", extra={"error": str(msg.error())})
                continue
            try:
                event = MOVE.validate_json(msg.value() or b"")
            except ValidationError as exc:
                log.warning(
                    "model event that is not an alias move skipped",
                    extra={"offset": msg.offset(), "error": str(exc)},
                )
                continue
            try:
                self.on_move(event)
            except Exception:
                log.exception("model event handler failed", extra={"event": event})
        self._consumer.close()

    def stop(self) -> None:
        self._stop_event.set()
