"""Bringing Redis up to the committed offsets of newly assigned partitions, called from the
featurizer's poll loop (as Quix Streams' RecoveryManager is from its own).

A partition assigned to this replica stays paused until its state is caught up: the state's
fence (the last source offset applied) is compared with the group's committed offset, and the
events in between, if any, are replayed into Redis only (no records are produced for them: they
were committed before). The consumer is polled between replay chunks so that the replica keeps
its group membership and serves rebalances meanwhile.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client import Counter

from millrace.featurize import Featurizer, source_event
from millrace.health import Liveness
from millrace.kafka import (
    Brokers,
    committed_offsets,
    consumer_config,
    has_data,
    read_range,
    watermarks,
)
from millrace.state import RedisState

log = logging.getLogger(__name__)

RECOVERED = Counter(
    "millrace_featurizer_recovered_events_total", "Events replayed to restore Redis state"
)


class StateRecovery:
    def __init__(
        self,
        featurizer: Featurizer,
        state: RedisState,
        consumer: Consumer,
        brokers: Brokers,
        group: str,
        events_topic: str,
        batch_size: int,
        liveness: Liveness,
        stopping: threading.Event,
        stable_wait_s: float,
    ) -> None:
        self.featurizer = featurizer
        self.state = state
        self.consumer = consumer
        self.brokers = brokers
        self.group = group
        self.events_topic = events_topic
        self.batch_size = batch_size
        self.liveness = liveness
        self.stopping = stopping
        self.stable_wait_s = stable_wait_s
        #: Assigned partitions whose Redis state is not yet caught up (paused until it is).
        self.unrecovered: set[int] = set()

    def assigned(self, partitions: Iterable[int]) -> None:
        self.unrecovered.update(partitions)

    def revoked(self, partitions: Iterable[int]) -> None:
        self.unrecovered.difference_update(partitions)

    def recover(self) -> None:
        """Catch up every unrecovered partition, then resume the consumer; returns early (the
        rest for a later call or the next owner) if a partition is revoked meanwhile."""
        pending = sorted(self.unrecovered)
        fences = self.state.fences()
        committed = committed_offsets(
            self.brokers,
            self.group,
            [TopicPartition(self.events_topic, p) for p in pending],
            self.stable_wait_s,
        )
        for tp in committed:
            start = fences.get(tp.partition, -1) + 1
            if tp.offset >= 0 and start < tp.offset:
                log.warning(
                    "redis state behind the committed offset; replaying the gap",
                    extra={"partition": tp.partition, "from": start, "to": tp.offset},
                )
                if not self._replay(tp.partition, start, tp.offset):
                    return  # revoked or stopping meanwhile: the next owner replays the rest
            self.unrecovered.discard(tp.partition)
            # From the offsets read here, not from the consumer's own fetch of them, which
            # waits for good on a hanging transaction.
            start = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(self.events_topic, tp.partition, start))
        if not self.unrecovered:
            self.consumer.resume(self.consumer.assignment())

    def _replay(self, partition: int, start: int, end: int, timeout: float = 600.0) -> bool:
        """Replay events ``[start, end)`` of ``partition`` into Redis only; False if the
        partition was revoked (or the runner told to stop) before the end."""
        reader = Consumer(
            consumer_config(self.brokers, f"{self.group}-recovery-{uuid.uuid4().hex}")
        )
        try:
            low, _ = watermarks(reader, self.events_topic)[partition]
            gap = read_range(
                reader, self.events_topic, partition, max(start, low), end, self.batch_size, timeout
            )
            for messages in gap:
                batch = [source_event(m) for m in messages]
                result = self.featurizer.run_batch(batch, self.state.read_many)
                self.state.apply(result.writes, {partition: batch[-1].offset})
                RECOVERED.inc(len(batch))
                self.liveness.beat()
                self._stay_in_group()
                if partition not in self.unrecovered or self.stopping.is_set():
                    return False
            self.state.apply({}, {partition: end - 1})
            return True
        finally:
            reader.close()

    def _stay_in_group(self) -> None:
        """Poll the (paused) consumer between replay chunks: it keeps the group membership
        alive and serves rebalances. Records it still had buffered are put back."""
        rewind_to: dict[int, int] = {}
        for message in self.consumer.consume(self.batch_size, timeout=0):
            if has_data(message):
                source = source_event(message)
                rewind_to.setdefault(source.partition, source.offset)
        for partition, offset in rewind_to.items():
            self.consumer.seek(TopicPartition(self.events_topic, partition, offset))
