"""The live featurizer: consume events, run the feature module, produce features exactly once.

Each poll batch is one Kafka transaction: the feature, label and dead-letter records and the
consumed offsets commit together (downstream reads ``read_committed``). Only then does the batch's
state go to Redis, fenced by source partition and offset (see :mod:`millrace.state`). If the
process dies between the two, the committed offset is ahead of the partition's Redis fence; when
the partition is next assigned (to this replica or another), :meth:`LiveFeaturizer.recover`
replays that gap from the events topic for its state only, producing nothing. Features are always
computed from the state of exactly the events before them, so a restarted or rebalanced featurizer
emits what an uninterrupted one would have.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge

from millrace.features import load_feature_module
from millrace.featurize import BatchResult, Featurizer, SourceEvent
from millrace.kafka import consumer_config, has_data, read_range, watermarks
from millrace.settings import CommonSettings
from millrace.state import RedisState

log = logging.getLogger(__name__)

EVENTS_IN = Counter("millrace_featurizer_events_total", "Events consumed")
FEATURES_OUT = Counter("millrace_featurizer_features_total", "Feature records produced")
LABELS_OUT = Counter("millrace_featurizer_labels_total", "Label records produced")
DEAD = Counter("millrace_featurizer_dead_letters_total", "Events dead-lettered", ["kind"])
LATE = Counter("millrace_featurizer_late_events_total", "Events later than the allowed lateness")
STATE_WRITES = Counter("millrace_featurizer_state_writes_total", "Entity state writes")
RECOVERED = Counter(
    "millrace_featurizer_recovered_events_total", "Events replayed to restore Redis state"
)
LAG_MS = Gauge("millrace_featurizer_event_time_lag_ms", "Wall clock minus newest event time")


class LiveFeaturizer:
    def __init__(
        self,
        featurizer: Featurizer,
        state: RedisState,
        bootstrap: str,
        group: str,
        events_topic: str,
        features_topic: str,
        labels_topic: str,
        dead_letter_topic: str,
        batch_size: int = 5000,
        instance_id: str | None = None,
        session_timeout_ms: int = 10_000,
    ) -> None:
        self.featurizer = featurizer
        self.state = state
        self.bootstrap = bootstrap
        self.group = group
        self.events_topic = events_topic
        self.features_topic = features_topic
        self.labels_topic = labels_topic
        self.dead_letter_topic = dead_letter_topic
        self.batch_size = batch_size
        self.stopping = threading.Event()
        self.batches = 0
        self.events = 0
        # A stable instance id gives a stable transactional id: a restarted replica's first
        # transaction fences and aborts whatever its dead predecessor left open.
        instance = instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.consumer = Consumer(
            consumer_config(
                bootstrap,
                group,
                **{"client.id": instance, "session.timeout.ms": session_timeout_ms},
            )
        )
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "transactional.id": f"{group}-{instance}",
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )

    @classmethod
    def from_settings(
        cls, settings: CommonSettings, group: str = "millrace-featurizer", **options: Any
    ) -> LiveFeaturizer:
        """The runner for the settings' feature module, topics, Redis and broker."""
        return cls(
            Featurizer(load_feature_module(settings.feature_module)),
            RedisState.from_url(settings.redis_url, settings.topic_prefix),
            settings.kafka_bootstrap,
            group=f"{settings.topic_prefix}{group}",
            events_topic=settings.events_topic,
            features_topic=settings.features_topic,
            labels_topic=settings.labels_topic,
            dead_letter_topic=settings.dead_letter_topic,
            **options,
        )

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())

    def run(self) -> None:
        self.state.claim_schema(self.featurizer.schema_marker)
        self.producer.init_transactions(30)
        self.consumer.subscribe(
            [self.events_topic], on_assign=lambda _consumer, parts: self.recover(parts)
        )
        log.info("featurizer running", extra={"topic": self.events_topic})
        try:
            while not self.stopping.is_set():
                messages = self.consumer.consume(self.batch_size, timeout=0.2)
                batch = [_source(m) for m in messages if has_data(m)]
                if batch:
                    self._process(batch)
        finally:
            self.consumer.close()
            self.producer.flush(10)
            log.info("featurizer stopped", extra={"batches": self.batches})

    def _process(self, batch: list[SourceEvent]) -> None:
        result = self.featurizer.run_batch(batch, self.state.read_many)
        try:
            self.producer.begin_transaction()
            self._produce(result)
            positions = self.consumer.position(self.consumer.assignment())
            self.producer.send_offsets_to_transaction(
                positions, self.consumer.consumer_group_metadata(), 30
            )
            self.producer.commit_transaction(30)
        except KafkaException as exc:
            log.error("transaction failed; rewinding", extra={"error": str(exc)})
            if exc.args[0].txn_requires_abort():
                self.producer.abort_transaction(30)
            self._rewind()
            return
        in_batch = {s.partition for s in batch}
        fences = {tp.partition: tp.offset - 1 for tp in positions if tp.partition in in_batch}
        self.state.apply(result.writes, fences)
        self.batches += 1
        self.events += len(batch)
        EVENTS_IN.inc(len(batch))
        FEATURES_OUT.inc(len(result.features))
        LABELS_OUT.inc(len(result.labels))
        STATE_WRITES.inc(len(result.writes))
        for dead in result.dead:
            DEAD.labels(dead.kind).inc()
            if dead.kind == "late":
                LATE.inc()
        if result.newest_ts:
            LAG_MS.set(time.time() * 1000 - result.newest_ts)

    def _produce(self, result: BatchResult) -> None:
        for key, value in result.features:
            self.producer.produce(self.features_topic, value, key)
        for key, value in result.labels:
            self.producer.produce(self.labels_topic, value, key)
        for dead in result.dead:
            source = f"{self.events_topic}/{dead.source.partition}/{dead.source.offset}"
            headers: list[tuple[str, str | bytes | None]] = [
                ("reason", dead.reason.encode()[:1000]),
                ("kind", dead.kind.encode()),
                ("source", source.encode()),
            ]
            self.producer.produce(
                self.dead_letter_topic, dead.source.value, dead.source.key, headers=headers
            )
            log.warning("dead-lettered event", extra={"reason": dead.reason, "source": source})

    def _rewind(self) -> None:
        assignment = self.consumer.assignment()
        for tp in self.consumer.committed(assignment, timeout=30):
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))

    # -- recovery ---------------------------------------------------------------------------

    def recover(self, partitions: list[TopicPartition]) -> None:
        """Bring Redis up to the committed offsets of newly assigned partitions."""
        fences = self.state.fences()
        for tp in self.consumer.committed(partitions, timeout=30):
            start = fences.get(tp.partition, -1) + 1
            if tp.offset >= 0 and start < tp.offset:
                log.warning(
                    "redis state behind the committed offset; replaying the gap",
                    extra={"partition": tp.partition, "from": start, "to": tp.offset},
                )
                self._replay_state(tp.partition, start, tp.offset)

    def _replay_state(self, partition: int, start: int, end: int, timeout: float = 600.0) -> None:
        reader = Consumer(
            consumer_config(self.bootstrap, f"{self.group}-recovery-{uuid.uuid4().hex}")
        )
        try:
            low, _ = watermarks(reader, self.events_topic)[partition]
            gap = read_range(
                reader, self.events_topic, partition, max(start, low), end, self.batch_size, timeout
            )
            for messages in gap:
                batch = [_source(m) for m in messages]
                result = self.featurizer.run_batch(batch, self.state.read_many)
                self.state.apply(result.writes, {partition: batch[-1].offset})
                RECOVERED.inc(len(batch))
            self.state.apply([], {partition: end - 1})
        finally:
            reader.close()


def _source(message: Message) -> SourceEvent:
    partition, offset = message.partition(), message.offset()
    assert partition is not None and offset is not None  # data messages always have both
    return SourceEvent(message.value() or b"", message.key(), partition, offset)
