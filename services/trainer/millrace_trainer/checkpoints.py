"""Trainer checkpoints on a compacted Kafka topic, committed in the same transaction as the
consumed offsets: after a crash the trainer restores exactly the state that matches where its
consumer group resumes, so no batch is learned twice or skipped."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from millrace.kafka import (
    Brokers,
    TopicSpec,
    abort_transaction,
    client_config,
    consumer_config,
    ensure_topics,
    read_range,
    retry_retriable,
    watermarks,
)

log = logging.getLogger(__name__)

MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024


class KafkaCheckpoints:
    def __init__(self, brokers: Brokers, topic: str, key: str, transactional_id: str) -> None:
        self.brokers = brokers
        self.topic = topic
        self.key = key
        ensure_topics(
            brokers,
            [
                TopicSpec(
                    topic,
                    1,
                    {"cleanup.policy": "compact", "max.message.bytes": str(MAX_CHECKPOINT_BYTES)},
                )
            ],
        )
        self.producer = Producer(
            client_config(
                brokers,
                **{
                    "transactional.id": transactional_id,
                    "message.max.bytes": MAX_CHECKPOINT_BYTES,
                    "compression.type": "zstd",
                },
            )
        )
        self.producer.init_transactions(30)

    def load(self) -> dict[str, Any] | None:
        """The newest committed checkpoint for this key, or None."""
        reader = Consumer(
            consumer_config(
                self.brokers,
                f"checkpoint-reader-{uuid.uuid4().hex}",
                **{
                    "fetch.max.bytes": MAX_CHECKPOINT_BYTES,
                    "max.partition.fetch.bytes": MAX_CHECKPOINT_BYTES,
                },
            )
        )
        latest: bytes | None = None
        try:
            low, high = watermarks(reader, self.topic)[0]
            for batch in read_range(reader, self.topic, 0, low, high, batch_size=100):
                for message in batch:
                    if message.key() == self.key.encode():
                        latest = message.value()
        finally:
            reader.close()
        return orjson.loads(latest) if latest else None

    def commit(
        self, state: dict[str, Any], offsets: list[TopicPartition], consumer: Consumer
    ) -> int:
        """Write ``state`` and commit ``offsets`` for ``consumer``'s group, atomically; returns
        the checkpoint's size in bytes."""
        data = orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            self.producer.begin_transaction()
            self.producer.produce(self.topic, data, self.key.encode())
            group = consumer.consumer_group_metadata()
            retry_retriable(
                lambda left: self.producer.send_offsets_to_transaction(offsets, group, left),
                "send_offsets_to_transaction",
                20,
            )
            retry_retriable(self.producer.commit_transaction, "commit_transaction", 30)
        except KafkaException as exc:
            abort_transaction(self.producer, exc)
            raise CheckpointFailed(str(exc.args[0])) from exc
        return len(data)


class CheckpointFailed(RuntimeError):
    """A checkpoint was not written (and its transaction aborted); the next one may be."""
