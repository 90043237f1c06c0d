"""Keeping Redis at the committed offsets of this replica's partitions: checked on assignment,
on every batch and between batches, rebuilt when found behind, all from the featurizer's poll
loop (as Quix Streams' RecoveryManager is from its own).

A partition is trusted when its Redis fence (the last source offset applied, written atomically
with the state) is the group's committed offset minus one. Otherwise Redis lost writes — a flush,
a restart without its data, a failover to a replica that had not received them — and the
partition is rebuilt, paused meanwhile: its ready mark is withdrawn (so that predictors stop
serving it), every entity state is restored from the state changelog, the events after what the
changelog reflects (none, normally) are replayed into Redis only, then the fence moves and the
mark comes back. The consumer is polled between chunks, so the replica keeps its group
membership and serves rebalances meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from prometheus_client import Counter

from millrace.featurize import Featurizer, source_event
from millrace.health import Liveness, ServiceFailed
from millrace.kafka import (
    Brokers,
    committed_offsets,
    consumer_config,
    has_data,
    read_range,
    watermarks,
)
from millrace.state import UNREACHABLE, RedisState, StateLost
from millrace_featurizer import changelog

log = logging.getLogger(__name__)

RECOVERED = Counter(
    "millrace_featurizer_recovered_events_total", "Events replayed to restore Redis state"
)
REBUILT = Counter(
    "millrace_featurizer_rebuilt_entities_total", "Entity states restored from the changelog"
)
REBUILDS = Counter(
    "millrace_featurizer_state_rebuilds_total",
    "Partitions whose Redis state was rebuilt, by source",
    ["source"],
)
LOSSES = Counter(
    "millrace_featurizer_state_losses_total", "Partitions whose Redis state was found lost"
)


class StateRecovery:
    def __init__(
        self,
        featurizer: Featurizer,
        state: RedisState,
        consumer: Consumer,
        producer: Producer,
        brokers: Brokers,
        group: str,
        events_topic: str,
        changelog_topic: str | None,
        batch_size: int,
        liveness: Liveness,
        stopping: threading.Event,
        stable_wait_s: float,
    ) -> None:
        self.featurizer = featurizer
        self.state = state
        self.consumer = consumer
        self.producer = producer
        self.brokers = brokers
        self.group = group
        self.events_topic = events_topic
        self.changelog_topic = changelog_topic
        self.batch_size = batch_size
        self.liveness = liveness
        self.stopping = stopping
        self.stable_wait_s = stable_wait_s
        #: Assigned partitions whose Redis state is not yet checked or caught up (paused).
        self.unrecovered: set[int] = set()
        #: partition -> the fence this replica last left in Redis (None: none yet): what a
        #: batch's write expects to find there.
        self.expected: dict[int, int | None] = {}
        #: Set when a loss was found since the loop last looked (see :meth:`take_losses`).
        self._losses = False
        self._checked_at = 0.0
        #: The offsets this recovery started partitions at (see :meth:`_start_at`).
        self._starts: dict[int, TopicPartition] = {}

    def assigned(self, partitions: Iterable[int]) -> None:
        partitions = list(partitions)
        for partition in partitions:
            self.unrecovered.add(partition)
            self.expected.pop(partition, None)
        self.state.release(partitions)

    def revoked(self, partitions: Iterable[int]) -> None:
        partitions = list(partitions)
        for partition in partitions:
            self.unrecovered.discard(partition)
            self.expected.pop(partition, None)
        # Left at a committed batch: the marks stay for the next owner to adopt.
        self.state.release(partitions)

    def owned(self) -> set[int]:
        return set(self.expected) | self.unrecovered

    def lost(self, partitions: Iterable[int], why: str) -> None:
        """Redis no longer holds what this replica wrote to ``partitions``: rebuild them."""
        found = sorted(set(partitions) & self.owned())
        if not found:
            return
        LOSSES.inc(len(found))
        self._losses = True
        log.warning("redis state lost; rebuilding", extra={"partitions": found, "why": why})
        for partition in found:
            self.unrecovered.add(partition)
            self.expected.pop(partition, None)
        # Unreachable: a reader cannot reach it either, and a new server has no marks.
        with contextlib.suppress(*UNREACHABLE):
            self.state.withdraw_ready(found)

    def take_losses(self) -> bool:
        """Whether a loss was found since the last call."""
        found, self._losses = self._losses, False
        return found

    def applied(self, fences: dict[int, int], lost: set[int]) -> None:
        for partition, offset in fences.items():
            if partition not in lost and partition in self.expected:
                self.expected[partition] = offset

    def check(self, every_s: float = 1.0) -> None:
        """With no commit in flight, at most every ``every_s``: fences still where this replica
        left them, and its marks on every server, made by the same server process (a flush
        removes them; a restart or a failover changes the run id)."""
        now = time.monotonic()
        if now - self._checked_at < every_s or not self.expected:
            return
        self._checked_at = now
        try:
            fences = self.state.fences()
            unmarked = self.state.verify() & set(self.expected)
        except UNREACHABLE as exc:
            self.lost(self.owned(), f"Redis unreachable: {exc}")
            return
        moved = [p for p, fence in self.expected.items() if fences.get(p) != fence]
        if moved:
            self.lost(moved, "a fence is not where this replica left it")
        if unmarked:
            self.lost(unmarked, "a Redis server no longer shows this replica's marks")

    def recover(self) -> None:
        """Check, and rebuild where needed, every unrecovered partition, then resume the
        consumer; returns early (the rest for a later call or the next owner) if a partition is
        revoked meanwhile."""
        self.state.wait_ready()
        pending = sorted(self.unrecovered)
        self._starts = {}
        fences = self.state.fences()
        committed = committed_offsets(
            self.brokers,
            self.group,
            [TopicPartition(self.events_topic, p) for p in pending],
            self.stable_wait_s,
        )
        total = self._partition_count()
        for tp in committed:
            partition, fence = tp.partition, fences.get(tp.partition)
            last = tp.offset - 1 if tp.offset > 0 else None  # the last committed source offset
            if last is None and fence is None:
                self.state.declare_ready([partition], total)  # nothing committed, nothing held
            # Else Redis must be at the committed offset, and every server vouch for it.
            elif (fence != last and last is not None) or self.state.adopt([partition], total):
                if not self._rebuild(partition, fence, last, total):
                    return  # revoked, stopping or lost again meanwhile: rebuilt by a later call
                fence = last
            if partition not in self.unrecovered:
                return
            self.expected[partition] = fence
            self.unrecovered.discard(partition)
            # From the offsets read here, not from the consumer's own fetch of them, which
            # waits for good on a hanging transaction.
            start = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._start_at(TopicPartition(self.events_topic, partition, start))
        if not self.unrecovered:
            self.consumer.resume(self.consumer.assignment())

    def _start_at(self, start: TopicPartition) -> None:
        """Where ``start``'s partition is consumed from. A seek is refused ("erroneous state")
        while the consumer still waits for its own fetch of the committed offset, which a
        hanging transaction keeps waiting for good: the partition is then assigned again with
        the offset given (the others at their positions), and stays paused like them."""
        try:
            self.consumer.seek(start)
            return
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._STATE:
                raise
        self._starts[start.partition] = start
        positions = self.consumer.position(self.consumer.assignment())
        again = {tp.partition: tp for tp in positions} | self._starts
        self.consumer.assign(list(again.values()))
        self.consumer.pause(self.consumer.assignment())
        log.warning(
            "the consumer could not seek; assigned again at the committed offset",
            extra={"partition": start.partition, "offset": start.offset},
        )

    def _rebuild(self, partition: int, fence: int | None, last: int | None, total: int) -> bool:
        """Redis state of ``partition`` from the changelog and the events after it, up to the
        committed offset ``last``, then marked complete; False if revoked, told to stop, or
        Redis lost it again before the end."""
        started = time.monotonic()
        self.state.begin_rebuild([partition])
        start, source = (0 if fence is None else fence + 1), "events"
        if self.changelog_topic is not None and last is not None:
            restored = self._from_changelog(partition, last)
            if restored is not None:
                start, source = restored, "changelog"
        if last is not None and start <= last:
            log.warning(
                "redis state behind the committed offset; replaying the gap",
                extra={"partition": partition, "from": start, "to": last + 1},
            )
            if not self._replay(partition, start, last + 1):
                return False
        self.state.set_fence(partition, last)
        if self.state.declare_ready([partition], total):
            self.lost([partition], "a Redis server lost its marks during the rebuild")
            return False
        REBUILDS.labels(source).inc()
        log.warning(
            "redis state of a partition rebuilt",
            extra={
                "partition": partition,
                "from": source,
                "to_offset": last,
                "seconds": round(time.monotonic() - started, 3),
            },
        )
        return True

    def _from_changelog(self, partition: int, last: int) -> int | None:
        """Restore every entity state of ``partition`` from the changelog; returns the first
        source offset the events must be replayed from, or None if the changelog does not cover
        the partition's whole history (the events must then hold it)."""
        assert self.changelog_topic is not None
        reader = Consumer(consumer_config(self.brokers, f"{self.group}-rebuild-{uuid.uuid4().hex}"))
        try:
            found = changelog.replay(
                reader, self.changelog_topic, partition, last, self.batch_size, 600.0
            )
        finally:
            reader.close()
        if found.records == 0:
            # State committed before the changelog began: say so for good, so that no later
            # rebuild takes an incomplete changelog for the whole state.
            self._mark_coverage(partition, last + 1)
            return None
        if found.covers_from > 0:
            return None
        self.state.rebuild(found.states)
        self.state.set_fence(partition, found.reflected)
        REBUILT.inc(len(found.states))
        self.liveness.beat()
        return found.reflected + 1 if found.reflected is not None else 0

    def _mark_coverage(self, partition: int, offset: int) -> None:
        assert self.changelog_topic is not None
        self.producer.begin_transaction()
        self.producer.produce(
            self.changelog_topic,
            changelog.encode_coverage(offset),
            changelog.COVERS_FROM,
            partition=partition,
        )
        self.producer.commit_transaction(30)

    def _replay(self, partition: int, start: int, end: int, timeout: float = 600.0) -> bool:
        """Replay events ``[start, end)`` of ``partition`` into Redis only; False if the
        partition was revoked (or the runner told to stop) before the end."""
        reader = Consumer(
            consumer_config(self.brokers, f"{self.group}-recovery-{uuid.uuid4().hex}")
        )
        try:
            low, _ = watermarks(reader, self.events_topic)[partition]
            if low > start:
                raise ServiceFailed(
                    f"cannot rebuild the Redis state of partition {partition}: it needs events "
                    f"from offset {start}, and the events topic starts at {low} (retention "
                    "deleted them) and the state changelog does not cover them"
                )
            gap = read_range(
                reader, self.events_topic, partition, start, end, self.batch_size, timeout
            )
            fence = self.state.fences().get(partition)
            try:
                for applied in replay_into_state(
                    self.featurizer, self.state, gap, partition, fence
                ):
                    RECOVERED.inc(applied)
                    self.liveness.beat()
                    self._stay_in_group()
                    if partition not in self.unrecovered or self.stopping.is_set():
                        return False
            except StateLost:
                return False  # lost again meanwhile: the next recovery starts over
            return True
        finally:
            reader.close()

    def _partition_count(self) -> int:
        topics = self.consumer.list_topics(self.events_topic, timeout=30).topics
        return len(topics[self.events_topic].partitions)

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


def replay_into_state(
    featurizer: Featurizer,
    state: RedisState,
    batches: Iterable[list[Message]],
    partition: int,
    fence: int | None,
) -> Iterator[int]:
    """Apply the events of ``batches`` (of ``partition``, in order, after ``fence``) to the
    Redis state only, producing nothing; yields each batch's size once applied. Raises
    :class:`StateLost` if Redis lost the partition meanwhile (its fence or marks moved)."""
    for messages in batches:
        batch = [source_event(m) for m in messages]
        result = featurizer.run_batch(batch, state.read_owned)
        offset = batch[-1].offset
        if state.apply(result.writes, {partition: offset}, {partition: fence}):
            raise StateLost([partition], "its fence or marks moved during the replay")
        fence = offset
        yield len(batch)
