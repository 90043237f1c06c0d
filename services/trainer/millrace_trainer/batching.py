"""Deterministic mini-batches from a stream: the label join and event-time windows.

A sample (a feature record joined with its label by subject id) belongs to the tumbling window
``[start, start + window_ms)`` that contains its *feature* time, provided its label's event time
is at most ``window end + label_wait_ms``; otherwise it is late and counted, never learned. A
window is ready once the watermark — the smallest, over every partition being read, of the newest
event time seen there — is past ``end + label_wait_ms``: every record that can belong to it has
then arrived, because each partition carries its records in event-time order. Ready windows are
handed out oldest first with their samples sorted by (time, id), so however the consumer
interleaves partitions and topics, the same records make the same batches, and the same model.

A partition that has reached its end offset and stayed there for ``idle_ms`` (wall-clock time,
the one rule that needs it) leaves the watermark until it has data again, so a stream that uses
only some partitions still trains; each such event is reported (:attr:`WindowedJoin.idle_events`)
for the lineage. Records waiting for a partner are bounded (``max_waiting`` per side; the oldest
leave first, counted in ``evicted``).

Checkpoints do not carry the buffer. :meth:`WindowedJoin.cursor` is small: how far learning got
(every window starting before ``learned_until`` is done, and with batches by count the samples
of that window before ``resume_from`` in (time, id) order too), the newest event time and the
consumed position of each partition, and the counters. :meth:`WindowedJoin.needed_offsets`
gives, per partition, the oldest offset still needed: the earliest buffered record, or the
consumed position. A restarted trainer resumes there and :meth:`WindowedJoin.restore` drops what
belongs to learned windows, so it learns exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import msgspec

from millrace.join import Pairs
from millrace.kafka import SourcePartition
from millrace.records import FeatureRecord, LabelRecord

#: Older than any event time (a partition's newest before its first record).
_BEFORE_ANY = -(2**62)


#: A joined sample's place in its batch: (time, id).
_TIME_ID = attrgetter("ts", "id")


# The join makes these per record and per sample: msgspec structs, built in C in a quarter of
# a NamedTuple's time, untracked by the garbage collector (they hold no cycles).
class Held(msgspec.Struct, frozen=True, gc=False):
    """A buffered record, where it was read, and whether it is read again after a restart
    (it was consumed before the checkpoint)."""

    record: Any  # FeatureRecord | LabelRecord
    partition: SourcePartition
    offset: int
    replayed: bool


class Joined(msgspec.Struct, frozen=True, gc=False):
    """A joined sample (what :class:`~millrace.join.Sample` holds, so learning reads it as
    one) with where its two records were read."""

    id: str
    ts: int
    features: dict[str, float]
    label: float
    features_partition: SourcePartition
    features_offset: int
    label_partition: SourcePartition
    label_offset: int


class Counted(msgspec.Struct, frozen=True, gc=False):
    """A sample waiting for a count batch, with the start of its window."""

    joined: Joined
    window: int


class Batch(msgspec.Struct, frozen=True, gc=False):
    start: int
    end: int
    #: In (time, id) order, with where their two records were read (the version's lineage).
    samples: list[Joined]


@dataclass
class IdleEvent:
    partition: SourcePartition
    #: The watermark when the partition left it.
    watermark: int | None


@dataclass
class Replay:
    """What a restored join knows about the records it reads again."""

    #: partition -> the consumed position at the checkpoint: offsets below are read again.
    until: dict[SourcePartition, int] = field(default_factory=dict)
    #: partition -> its newest event time at the checkpoint, taken back once it is read again.
    newest: dict[SourcePartition, int] = field(default_factory=dict)


class WindowedJoin:
    """Batches by event-time window or, with ``batch_samples``, by count: the complete windows'
    samples, in order, cut into batches of exactly that many (the rest waits for the next
    window)."""

    def __init__(
        self,
        *,
        window_ms: int,
        label_wait_ms: int,
        batch_samples: int | None,
        idle_ms: int | None,
        max_waiting: int | None,
    ) -> None:
        """Every value from the trainer's settings (``service.make_join``), where the defaults
        are written."""
        if batch_samples is not None and batch_samples < 1:
            raise ValueError("batch_samples must be positive")
        self.window_ms = window_ms
        self.label_wait_ms = label_wait_ms
        self.batch_samples = batch_samples
        self.idle_ms = idle_ms
        #: Feature records (left) and labels (right) waiting for their partner.
        self.pairs: Pairs[Held, Held] = Pairs(max_waiting)
        self.windows: dict[int, list[Joined]] = {}
        #: Count batches: (sample, its window) handed out, not yet batched.
        self.pending: list[Counted] = []
        self.newest: dict[SourcePartition, int] = {}
        #: partition -> next offset after the last record
        self.consumed: dict[SourcePartition, int] = {}
        self.partitions: set[SourcePartition] = set()
        #: partition -> when it reached its end offset
        self.at_end_since: dict[SourcePartition, float] = {}
        self.idle: set[SourcePartition] = set()
        self.idle_events: list[IdleEvent] = []
        self.learned_until: int | None = None
        #: After a restore with batches by count: the (time, id) of the first sample of window
        #: ``learned_until`` that was not learned yet.
        self.resume_from: tuple[int, str] | None = None
        self.replay = Replay()
        self.late = 0
        self.expired = 0
        # (event time, 0 = features | 1 = label, id) of every waiting record, oldest first, so
        # expiry looks only at what expires (entries of records paired meanwhile are skipped).
        self._expiry: list[tuple[int, int, str]] = []

    @property
    def evicted(self) -> int:
        return self.pairs.evicted

    def assign(self, partitions: set[SourcePartition]) -> None:
        """The partitions whose progress the watermark waits for."""
        self.partitions = set(partitions)

    # -- input -------------------------------------------------------------------------------

    def add_features(self, partition: SourcePartition, record: FeatureRecord, offset: int) -> None:
        self.add_records([record], [partition], [offset])

    def add_label(self, partition: SourcePartition, record: LabelRecord, offset: int) -> None:
        self.add_records([record], [partition], [offset])

    def add_records(
        self,
        records: Sequence[FeatureRecord | LabelRecord],
        partitions: Sequence[SourcePartition],
        offsets: Sequence[int],
    ) -> None:
        """Records in the order they were read (record ``k`` at ``offsets[k]`` of
        ``partitions[k]``): the poll loop hands over a poll at a time, up to its first
        end-of-partition event (:meth:`reached_end` comes in order between two calls).

        This is the trainer's per-record path, twice per sample: the pairing
        (:class:`~millrace.join.Pairs`' rules) and the partitions' progress are inlined, with
        everything bound to locals, because a method call per step cost more than the rest."""
        window_ms, learned_until = self.window_ms, self.learned_until
        replay_until = self.replay.until
        left, right = self.pairs.left, self.pairs.right
        limit = self.pairs.limit
        newest, consumed, expiry = self.newest, self.consumed, self._expiry
        label_wait_ms, windows, push = self.label_wait_ms, self.windows, heapq.heappush
        touched: set[SourcePartition] = set()
        last_partition = None
        for record, partition, offset in zip(records, partitions, offsets, strict=True):
            ts = record.ts
            if partition is not last_partition:  # a poll holds runs of one partition
                touched.add(partition)
                last_partition = partition
            if replay_until and partition in replay_until:
                replayed = self._replayed(partition, ts, offset)
            else:
                replayed = False
                if ts > newest.get(partition, _BEFORE_ANY):
                    newest[partition] = ts
                consumed[partition] = offset + 1
            key = record.id
            if type(record) is FeatureRecord:
                if learned_until is not None and ts - ts % window_ms < learned_until:
                    self.late += not replayed  # its window is learned already
                    continue
                side, partners, kind = left, right, 0
            else:
                side, partners, kind = right, left, 1
            held = Held(record, partition, offset, replayed)
            partner = partners.pop(key, None)
            if partner is not None:  # a sample: in its window unless its label came too late
                features, label = (partner, held) if kind else (held, partner)
                features_record, label_record = features.record, label.record
                ts = features_record.ts
                start = ts - ts % window_ms
                if label_record.ts > start + window_ms + label_wait_ms:
                    # Decided before the checkpoint if both were read before it.
                    self.late += not (features.replayed and label.replayed)
                    continue
                joined = Joined(
                    key,
                    ts,
                    features_record.features,
                    label_record.label,
                    features.partition,
                    features.offset,
                    label.partition,
                    label.offset,
                )
                in_window = windows.get(start)
                if in_window is None:
                    windows[start] = [joined]
                else:
                    in_window.append(joined)
                continue
            side[key] = held
            if limit is not None and len(side) > limit:
                del side[next(iter(side))]
                self.pairs.evicted += 1
            push(expiry, (ts, kind, key))
        at_end_since, idle = self.at_end_since, self.idle
        for partition in touched:
            at_end_since.pop(partition, None)
            idle.discard(partition)

    def reached_end(self, partition: SourcePartition, now: float) -> None:
        """``partition`` is at its end offset (the consumer said so) at wall-clock ``now``."""
        self.at_end_since.setdefault(partition, now)

    def _replayed(self, partition: SourcePartition, ts: int, offset: int) -> bool:
        """Track the progress of a partition read again after a restart; True while the
        record was consumed before the checkpoint."""
        if ts > self.newest.get(partition, _BEFORE_ANY):
            self.newest[partition] = ts
        self.consumed[partition] = offset + 1
        until = self.replay.until[partition]
        if offset + 1 >= until:  # read up to where it was: its newest time counts again
            del self.replay.until[partition]
            newest = self.replay.newest.pop(partition, ts)
            self.newest[partition] = max(self.newest[partition], newest)
        return offset + 1 <= until

    # -- output ------------------------------------------------------------------------------

    def watermark(self, now: float = 0.0) -> int | None:
        if self.idle_ms is not None:
            self._update_idle(now)
        active = self.partitions - self.idle
        if not active or any(p not in self.newest for p in active):
            return None
        return min(self.newest[p] for p in active)

    def _update_idle(self, now: float) -> None:
        for partition, since in self.at_end_since.items():
            waited_ms = (now - since) * 1000
            if partition in self.partitions - self.idle and waited_ms >= (self.idle_ms or 0):
                self.idle.add(partition)
                self.idle_events.append(IdleEvent(partition, self.watermark_without_idle()))

    def watermark_without_idle(self) -> int | None:
        seen = [self.newest[p] for p in self.partitions if p in self.newest]
        return min(seen) if seen else None

    def ready(self, now: float = 0.0) -> list[Batch]:
        """Windows complete under the watermark, oldest first; they leave the buffer."""
        watermark = self.watermark(now)
        if watermark is None:
            return []
        horizon = watermark - self.label_wait_ms
        closed = (horizon - self.window_ms - 1) // self.window_ms * self.window_ms
        batches: list[tuple[int, list[Joined]]] = []
        for start in sorted(s for s in self.windows if s <= closed):
            joined = sorted(self.windows.pop(start), key=_TIME_ID)
            if start == self.learned_until and self.resume_from is not None:
                first = self.resume_from  # the samples before it were learned before a restart
                joined = [j for j in joined if (j.ts, j.id) >= first]
                self.resume_from = None
            batches.append((start, joined))
        if self.learned_until is None or closed + self.window_ms > self.learned_until:
            self.learned_until = closed + self.window_ms
        self._expire(horizon)
        if self.batch_samples is not None:
            return self._by_count(batches, self.batch_samples)
        return [Batch(s, s + self.window_ms, joined) for s, joined in batches]

    def _expire(self, horizon: int) -> None:
        """Records that can no longer meet a partner within the wait leave the buffer."""
        expiry, before = self._expiry, horizon - self.window_ms
        left, right, pop = self.pairs.left, self.pairs.right, heapq.heappop
        expired = 0
        while expiry and expiry[0][0] < before:
            ts, kind, key = pop(expiry)
            side = right if kind else left
            held = side.get(key)
            if held is not None and held.record.ts == ts:  # not paired (nor replaced) since
                del side[key]
                expired += not held.replayed
        self.expired += expired

    def _by_count(self, windows: list[tuple[int, list[Joined]]], size: int) -> list[Batch]:
        for start, joined in windows:
            self.pending += [Counted(j, start) for j in joined]
        full = len(self.pending) // size * size
        cuts = [self.pending[i : i + size] for i in range(0, full, size)]
        self.pending = self.pending[full:]
        batches = []
        for cut in cuts:
            joined = [c.joined for c in cut]
            batches.append(Batch(joined[0].ts, joined[-1].ts + 1, joined))
        return batches

    # -- checkpoints -------------------------------------------------------------------------

    def cursor(self) -> dict[str, Any]:
        """How far learning got, per-partition progress and the counters: a checkpoint's part
        of the join, whatever the size of the buffer."""
        learned_until, resume_from = self.learned_until, None
        if self.resume_from is not None:  # restored, and that window is not handed out yet
            resume_from = list(self.resume_from)
        if self.pending:
            sample, learned_until = self.pending[0].joined, self.pending[0].window
            resume_from = [sample.ts, sample.id]
        newest, consumed = dict(self.newest), dict(self.consumed)
        for partition, ts in self.replay.newest.items():
            newest[partition] = max(ts, newest.get(partition, ts))
        for partition, offset in self.replay.until.items():
            consumed[partition] = max(offset, consumed.get(partition, offset))
        return {
            "learned_until": learned_until,
            "resume_from": resume_from,
            # JSON keys: the partitions' text.
            "newest": {str(p): ts for p, ts in newest.items()},
            "consumed": {str(p): offset for p, offset in consumed.items()},
            "late": self.late,
            "expired": self.expired,
            "evicted": self.evicted,
        }

    def needed_offsets(self) -> dict[SourcePartition, int]:
        """partition -> the oldest offset still needed: the earliest record held in the buffer
        (waiting, in a window, or pending), or the next offset to read when none is."""
        needed = dict(self.consumed)

        def hold(partition: SourcePartition, offset: int) -> None:
            if offset < needed.get(partition, offset + 1):
                needed[partition] = offset

        for side in (self.pairs.left, self.pairs.right):
            for held in side.values():
                hold(held.partition, held.offset)
        joined = [j for js in self.windows.values() for j in js]
        joined += [c.joined for c in self.pending]
        for j in joined:
            hold(j.features_partition, j.features_offset)
            hold(j.label_partition, j.label_offset)
        return needed

    def restore(self, cursor: dict[str, Any], needed: dict[SourcePartition, int]) -> None:
        """Continue after the checkpoint ``cursor`` and ``needed`` (the offsets the consumer
        resumes at) came from. Records read again are told apart by their offsets: those of
        learned windows are dropped, counted nowhere a second time."""
        self.learned_until = cursor["learned_until"]
        first = cursor["resume_from"]
        self.resume_from = (int(first[0]), str(first[1])) if first is not None else None
        self.late = int(cursor["late"])
        self.expired = int(cursor["expired"])
        self.pairs.evicted = int(cursor["evicted"])
        self.replay = Replay()
        for name, until in cursor["consumed"].items():
            partition = SourcePartition(name)
            start = int(needed.get(partition, until))
            self.consumed[partition] = start
            if start < int(until):
                self.replay.until[partition] = int(until)
                self.replay.newest[partition] = int(cursor["newest"][name])
            elif name in cursor["newest"]:
                self.newest[partition] = int(cursor["newest"][name])
