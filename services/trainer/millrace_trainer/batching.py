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

The rules run in compiled code (``services/trainer/join_core``, a Rust extension): a poll's
messages are decoded, paired and windowed there without a Python object per record, and a
ready batch comes back as columns (:class:`Samples`): the learner's hashed features as CSR
arrays, the labels, the times and ids and where each record was read, each sample a
:class:`Joined` only when something asks for one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import msgspec
import numpy as np
from prometheus_client import Counter

from millrace.kafka import SourcePartition, raise_if_consumer_failed
from millrace.learners import Classifier, LogisticRegression
from millrace.records import FeatureRecord, LabelRecord, encode

try:
    from millrace_join_core import JoinCore, Rows
except ImportError as exc:  # pragma: no cover - an install without the compiled join
    raise ImportError(
        "the trainer's compiled join is not installed: pip install ./services/trainer/join_core "
        "(it builds with Rust's cargo; `make install` does it)"
    ) from exc

log = logging.getLogger(__name__)

UNDECODABLE = Counter("millrace_trainer_undecodable_total", "Records that did not decode")

_decode_features = msgspec.json.Decoder(dict[str, float]).decode


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


class Samples(Sequence[Joined]):
    """A ready batch's samples in their learned order, as the compiled join hands them out:
    the samples ``lo:hi`` of the columns of a poll's ready batches, read in one call each;
    indexing makes the :class:`Joined` of one sample."""

    __slots__ = ("hi", "lo", "rows")

    def __init__(self, rows: Rows, lo: int, hi: int) -> None:
        self.rows, self.lo, self.hi = rows, lo, hi

    def __len__(self) -> int:
        return self.hi - self.lo

    @overload
    def __getitem__(self, k: int) -> Joined: ...
    @overload
    def __getitem__(self, k: slice) -> list[Joined]: ...
    def __getitem__(self, k: int | slice) -> Joined | list[Joined]:
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        if not -len(self) <= k < len(self):
            raise IndexError("sample index out of range")
        id, ts, raw, label, features_at, features_offset, label_at, label_offset = self.rows.row(
            self.lo + (k + len(self) if k < 0 else k)
        )
        return Joined(
            id,
            ts,
            _decode_features(raw),
            label,
            SourcePartition(features_at),
            features_offset,
            SourcePartition(label_at),
            label_offset,
        )

    def __iter__(self) -> Iterator[Joined]:
        return (self[k] for k in range(len(self)))


#: Samples ``lo:hi`` of one poll's columns.
Span = tuple[Rows, int, int]


def spans(batches: Sequence[Sequence[Any]]) -> list[Span] | None:
    """Consecutive batches' samples as runs of the compiled join's columns (a poll's batches
    are one run), or None if some batch is not the compiled join's."""
    out: list[Span] = []
    for batch in batches:
        if not isinstance(batch, Samples):
            return None
        if out and out[-1][0] is batch.rows and out[-1][2] == batch.lo:
            out[-1] = (batch.rows, out[-1][1], batch.hi)
        else:
            out.append((batch.rows, batch.lo, batch.hi))
    return out


def record_offsets(span: Span) -> dict[str, np.ndarray]:
    """partition -> the offsets of the records (features and labels) the samples joined."""
    rows, lo, hi = span
    at, offsets = (np.frombuffer(column, np.int64) for column in rows.places(lo, hi))
    names = rows.partitions()
    return {names[p]: offsets[at == p] for p in np.unique(at).tolist()}


class Batch(msgspec.Struct, frozen=True, gc=False):
    start: int
    end: int
    #: In (time, id) order, with where their two records were read (the version's lineage).
    samples: Sequence[Joined]


def encode_batches(learner: Classifier, batches: Sequence[Sequence[Any]]) -> tuple[Any, np.ndarray]:
    """Consecutive batches' features, as ``learner`` reads them, and labels: the compiled
    join's hashed columns for the hashed learner, the features by name otherwise."""
    runs = spans(batches) if isinstance(learner, LogisticRegression) else None
    if runs is not None:
        mask = learner.mask  # type: ignore[attr-defined]
        columns = [rows.hashed(mask, lo, hi) for rows, lo, hi in runs]
        cols, values, lengths = (
            np.concatenate([np.frombuffer(c[k], dtype) for c in columns])
            for k, dtype in ((0, np.int64), (1, np.float64), (2, np.int64))
        )
        y = np.concatenate(
            [np.frombuffer(rows.labels(lo, hi), np.float64) for rows, lo, hi in runs]
        )
        return learner.encode_hashed(cols, values, lengths), y  # type: ignore[attr-defined]
    samples = [s for batch in batches for s in batch]
    y = np.fromiter((s.label for s in samples), float, len(samples))
    return learner.encode_many([s.features for s in samples]), y


@dataclass
class IdleEvent:
    partition: SourcePartition
    #: The watermark when the partition left it.
    watermark: int | None


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
        self.core = JoinCore(
            window_ms=window_ms,
            label_wait_ms=label_wait_ms,
            batch_samples=batch_samples,
            idle_ms=idle_ms,
            max_waiting=max_waiting,
        )
        self.idle_events: list[IdleEvent] = []

    @property
    def late(self) -> int:
        return self.core.late

    @property
    def expired(self) -> int:
        return self.core.expired

    @property
    def evicted(self) -> int:
        return self.core.evicted

    @property
    def waiting(self) -> tuple[int, int]:
        """(feature records, labels) waiting for their partner."""
        return self.core.waiting()

    @property
    def idle(self) -> set[SourcePartition]:
        return {SourcePartition(p) for p in self.core.idle()}

    def assign(self, partitions: set[SourcePartition]) -> None:
        """The partitions whose progress the watermark waits for."""
        self.core.assign(sorted(partitions))

    # -- input -------------------------------------------------------------------------------

    def add_poll(self, messages: Iterable[Any], features_topic: str, now: float = 0.0) -> int:
        """Decode and join a poll's Kafka messages in the order they were read (those of
        ``features_topic`` are feature records, the others labels; ``now``: the wall-clock time
        of its end-of-partition events). Returns how many were records: undecodable ones
        included, which are counted, logged and skipped."""
        read, undecodable, errors = self.core.add_poll(messages, features_topic, now)
        for topic, reason in undecodable:
            UNDECODABLE.inc()
            log.warning("undecodable record skipped", extra={"topic": topic, "error": reason})
        for error in errors:
            raise_if_consumer_failed(error)
            log.warning("consumer error", extra={"error": str(error)})
        return read

    def add_features(self, partition: SourcePartition, record: FeatureRecord, offset: int) -> None:
        self._add(True, encode(record), partition, offset)

    def add_label(self, partition: SourcePartition, record: LabelRecord, offset: int) -> None:
        self._add(False, encode(record), partition, offset)

    def _add(
        self, is_features: bool, value: bytes, partition: SourcePartition, offset: int
    ) -> None:
        reason = self.core.add_record(is_features, value, partition, offset)
        if reason is not None:
            raise ValueError(f"undecodable record: {reason}")

    def reached_end(self, partition: SourcePartition, now: float) -> None:
        """``partition`` is at its end offset (the consumer said so) at wall-clock ``now``."""
        self.core.reached_end(partition, now)

    def last_offsets(self) -> dict[SourcePartition, int]:
        """The offset of the last record read per partition, by this process."""
        return {SourcePartition(p): offset for p, offset in self.core.last_offsets()}

    # -- output ------------------------------------------------------------------------------

    def watermark(self, now: float = 0.0) -> int | None:
        watermark = self.core.watermark(now)
        self._note_idle()
        return watermark

    def watermark_without_idle(self) -> int | None:
        return self.core.watermark_without_idle()

    def ready(self, now: float = 0.0) -> list[Batch]:
        """Windows complete under the watermark, oldest first; they leave the buffer."""
        rows, bounds = self.core.ready(now)
        self._note_idle()
        return [Batch(start, end, Samples(rows, lo, hi)) for start, end, lo, hi in bounds]

    def _note_idle(self) -> None:
        for partition, watermark in self.core.take_idle_events():
            self.idle_events.append(IdleEvent(SourcePartition(partition), watermark))

    # -- checkpoints -------------------------------------------------------------------------

    def cursor(self) -> dict[str, Any]:
        """How far learning got, per-partition progress and the counters: a checkpoint's part
        of the join, whatever the size of the buffer."""
        core = self.core
        learned_until = core.learned_until
        # Restored, and that window is not handed out yet.
        resume_from: list[Any] | None = None
        if core.resume_from is not None:
            resume_from = list(core.resume_from)
        first = core.pending_first()
        if first is not None:
            learned_until, first_ts, first_id = first
            resume_from = [first_ts, first_id]
        newest: dict[str, int] = {}
        consumed: dict[str, int] = {}
        for name, ts, offset, replay_until, replay_newest in core.progress():
            # A partition read again counts at least where it was at the checkpoint.
            if ts is not None or replay_newest is not None:
                newest[name] = max(t for t in (ts, replay_newest) if t is not None)
            if offset is not None or replay_until is not None:
                consumed[name] = max(o for o in (offset, replay_until) if o is not None)
        return {
            "learned_until": learned_until,
            "resume_from": resume_from,
            "newest": newest,
            "consumed": consumed,
            "late": core.late,
            "expired": core.expired,
            "evicted": core.evicted,
        }

    def needed_offsets(self) -> dict[SourcePartition, int]:
        """partition -> the oldest offset still needed: the earliest record held in the buffer
        (waiting, in a window, or pending), or the next offset to read when none is."""
        return {SourcePartition(p): offset for p, offset in self.core.needed_offsets()}

    def restore(self, cursor: dict[str, Any], needed: dict[SourcePartition, int]) -> None:
        """Continue after the checkpoint ``cursor`` and ``needed`` (the offsets the consumer
        resumes at) came from. Records read again are told apart by their offsets: those of
        learned windows are dropped, counted nowhere a second time."""
        first = cursor["resume_from"]
        newest = cursor["newest"]
        self.core.restore(
            cursor["learned_until"],
            (int(first[0]), str(first[1])) if first is not None else None,
            int(cursor["late"]),
            int(cursor["expired"]),
            int(cursor["evicted"]),
            [
                (
                    name,
                    int(needed.get(SourcePartition(name), until)),
                    int(until),
                    int(newest[name]) if name in newest else None,
                )
                for name, until in cursor["consumed"].items()
            ],
        )
