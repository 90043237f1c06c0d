"""A poll's Kafka messages into the trainer's join: decoded typed, in the order they were read.

The records go to :meth:`~millrace_trainer.batching.WindowedJoin.add_records` a poll at a time
(up to each end-of-partition event, which the join hears in order between two calls), so the
per-record work is one pass of plain Python here and one in the join, without a method call per
record in between: at two records per sample, that pass is most of what the trainer does
beyond the consume.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import msgspec
from confluent_kafka import KafkaError, Message
from prometheus_client import Counter

from millrace.kafka import SourcePartition, raise_if_consumer_failed
from millrace.records import FeatureRecord, LabelRecord, decode_features, decode_label
from millrace_trainer.batching import WindowedJoin

log = logging.getLogger(__name__)

UNDECODABLE = Counter("millrace_trainer_undecodable_total", "Records that did not decode")


class JoinFeed:
    """Feeds ``join`` with the records of the two topics (those of ``features_topic`` decode as
    feature records, every other topic's as labels)."""

    def __init__(self, join: WindowedJoin, features_topic: str) -> None:
        self.join = join
        self.features_topic = features_topic
        self._names: dict[tuple[str | None, int | None], SourcePartition] = {}
        #: The offset of the last record read per partition, by this process.
        self.last_offsets: dict[SourcePartition, int] = {}

    def name(self, topic: str | None, partition: int | None) -> SourcePartition:
        key = (topic, partition)
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = SourcePartition.of(str(topic), partition or 0)
        return name

    def add(self, messages: Iterable[Message], now: float = 0.0) -> int:
        """Decode and join a poll's messages (``now``: the wall-clock time of an end of
        partition); returns how many were records (undecodable ones included: they are
        counted, logged and skipped)."""
        join, names, last_offsets, features_topic = (
            self.join,
            self._names,
            self.last_offsets,
            self.features_topic,
        )
        records: list[FeatureRecord | LabelRecord] = []
        partitions: list[SourcePartition] = []
        offsets: list[int] = []
        read = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    join.add_records(records, partitions, offsets)  # what came before it first
                    records, partitions, offsets = [], [], []
                    join.reached_end(self.name(message.topic(), message.partition()), now)
                else:
                    raise_if_consumer_failed(error)
                    log.warning("consumer error", extra={"error": str(error)})
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset() or 0
            name = names.get((topic, partition)) or self.name(topic, partition)
            last_offsets[name] = offset
            read += 1
            try:
                if topic == features_topic:
                    records.append(decode_features(message.value() or b""))
                else:
                    records.append(decode_label(message.value() or b""))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                UNDECODABLE.inc()
                log.warning("undecodable record skipped", extra={"topic": topic, "error": str(exc)})
                continue
            partitions.append(name)
            offsets.append(offset)
        join.add_records(records, partitions, offsets)
        return read
