"""The live featurizer: consume events, run the feature module, produce features exactly once.

Each poll batch is one Kafka transaction: the feature, label and dead-letter records and the
consumed offsets commit together (downstream reads ``read_committed``). State writes go to Redis
before the commit, fenced by source partition and offset, so a batch replayed after a crash
applies no state twice.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from millrace.featurize import BatchResult, Featurizer, SourceEvent
from millrace.kafka import consumer_config, has_data
from millrace.state import RedisState
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

EVENTS_IN = Counter("millrace_featurizer_events_total", "Events consumed")
FEATURES_OUT = Counter("millrace_featurizer_features_total", "Feature records produced")
LABELS_OUT = Counter("millrace_featurizer_labels_total", "Label records produced")
DEAD = Counter("millrace_featurizer_dead_letters_total", "Events dead-lettered", ["kind"])
STATE_WRITES = Counter("millrace_featurizer_state_writes_total", "Fenced state writes applied")
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
        batch_size: int = 1000,
        instance_id: str | None = None,
    ) -> None:
        self.featurizer = featurizer
        self.state = state
        self.events_topic = events_topic
        self.features_topic = features_topic
        self.labels_topic = labels_topic
        self.dead_letter_topic = dead_letter_topic
        self.batch_size = batch_size
        self.stopping = threading.Event()
        self.batches = 0
        instance = instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self.consumer = Consumer(consumer_config(bootstrap, group, **{"client.id": instance}))
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "transactional.id": f"{group}-{instance}",
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())

    def run(self) -> None:
        self.state.claim_schema(self.featurizer.schema_marker)
        self.producer.init_transactions(30)
        self.consumer.subscribe([self.events_topic])
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
        applied = self.state.write_many(result.writes)
        try:
            self.producer.begin_transaction()
            self._produce(result)
            positions = self.consumer.position(self.consumer.assignment())
            self.producer.send_offsets_to_transaction(
                positions, self.consumer.consumer_group_metadata(), 30
            )
            self.producer.commit_transaction(30)
        except KafkaException as exc:
            log.error(
                "transaction failed; rewinding to the committed offsets", extra={"error": str(exc)}
            )
            if exc.args[0].txn_requires_abort():
                self.producer.abort_transaction(30)
            self._rewind()
            return
        self.batches += 1
        EVENTS_IN.inc(len(batch))
        FEATURES_OUT.inc(len(result.features))
        LABELS_OUT.inc(len(result.labels))
        STATE_WRITES.inc(applied)
        for dead in result.dead:
            DEAD.labels(dead.kind).inc()
        if result.newest_ts:
            LAG_MS.set(time.time() * 1000 - result.newest_ts)

    def _produce(self, result: BatchResult) -> None:
        for key, value in result.features:
            self.producer.produce(self.features_topic, value, key)
        for key, value in result.labels:
            self.producer.produce(self.labels_topic, value, key)
        for dead in result.dead:
            headers = [
                ("reason", dead.reason.encode()[:1000]),
                ("kind", dead.kind.encode()),
                (
                    "source",
                    f"{self.events_topic}/{dead.source.partition}/{dead.source.offset}".encode(),
                ),
            ]
            self.producer.produce(
                self.dead_letter_topic, dead.source.value, dead.source.key, headers=headers
            )
            log.warning(
                "dead-lettered event", extra={"reason": dead.reason, "offset": dead.source.offset}
            )

    def _rewind(self) -> None:
        assignment = self.consumer.assignment()
        committed = self.consumer.committed(assignment, timeout=30)
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else 0
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))


def _source(message) -> SourceEvent:
    return SourceEvent(message.value() or b"", message.key(), message.partition(), message.offset())
