"""What the next version is built from since its parent, as the trainer accumulates it.

A version's lineage names exactly what it learned: per source partition, the offsets of the
feature and label records of every sample it learned since its parent (as inclusive ranges),
and the batches they made (samples per batch, in order, with a chained digest of each batch's
``(time, id)`` sequence). Whatever the poll sizes, the checkpoints or the restarts, the parent's
model plus those records cut into those batches is the version: :mod:`millrace_trainer.rebuild`
trains it again and compares the bytes.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from typing import Any

import numpy as np

from millrace.evaluation import Scores
from millrace.join import Labelled
from millrace_trainer.batching import Batch, record_offsets, spans
from millrace_trainer.publishing import PendingVersion

#: The version of the ``learned`` record's layout in a version's lineage.
LEARNED_FORMAT = 1
#: Where a learned sample's two records were read.
_WHERE = attrgetter("features_partition", "features_offset", "label_partition", "label_offset")
#: The digest before any batch.
EMPTY_DIGEST = hashlib.sha256(b"millrace-lineage").hexdigest()


def offset_ranges(offsets: Iterable[int]) -> list[list[int]]:
    """Sorted, distinct offsets as inclusive ``[first, last]`` runs.

    >>> offset_ranges([7, 3, 4, 5, 9, 10])
    [[3, 5], [7, 7], [9, 10]]
    """
    values = np.fromiter(offsets, dtype=np.int64)
    values.sort()
    if not len(values):
        return []
    values = values[np.concatenate(([True], values[1:] != values[:-1]))]  # distinct
    breaks = np.flatnonzero(np.diff(values) != 1)
    firsts = np.concatenate([values[:1], values[breaks + 1]])
    lasts = np.concatenate([values[breaks], values[-1:]])
    runs: list[list[int]] = np.column_stack((firsts, lasts)).tolist()
    return runs


def expand(ranges: Sequence[Sequence[int]]) -> list[int]:
    """The offsets of inclusive ranges.

    >>> expand([[3, 5], [9, 9]])
    [3, 4, 5, 9]
    """
    return [offset for first, last in ranges for offset in range(int(first), int(last) + 1)]


def chain_digest(previous: str, samples: Sequence[Labelled]) -> str:
    """The digest after one more batch: its samples' ``(time, id)`` in their learned order."""
    digest = hashlib.sha256(previous.encode())
    digest.update("\x1e".join([f"{s.ts}\x1f{s.id}" for s in samples]).encode())
    return digest.hexdigest()


@dataclass
class Lineage:
    #: The parent version: a number, or one handed to the publisher and not yet numbered.
    parent: int | PendingVersion | None
    #: partition -> offsets of the records (features and labels) learned since the parent.
    records: defaultdict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    #: Samples in each batch learned since the parent, in order.
    batch_samples: list[int] = field(default_factory=list)
    digest: str = EMPTY_DIGEST
    #: Event time: the start of the first batch since the parent and the end of the last one.
    first_start: int | None = None
    last_end: int | None = None
    #: False when restored from a checkpoint of a release that did not record the records.
    exact: bool = True
    #: The learning model's prequential scores since the parent ...
    scores: Scores = field(default_factory=Scores)
    #: ... and the parent's own on the same batches (kept when the validation gate is on).
    parent_scores: Scores = field(default_factory=Scores)
    rounds: list[int] = field(default_factory=list)
    #: Partitions that left the watermark while idle (wall-clock time decided it).
    idle: list[dict[str, Any]] = field(default_factory=list)

    def learned(self, batches: Sequence[Batch]) -> None:
        """Batches just learned, in order."""
        if not batches:
            return
        runs = spans([batch.samples for batch in batches])
        if runs is None:
            for batch in batches:
                self._learned_one(batch.samples)
        else:  # the compiled join's columns: a call for each poll's batches, not each batch
            for run in runs:
                for name, offsets in record_offsets(run).items():
                    self.records[name] += offsets.tolist()
            for rows, group in groupby(batches, key=lambda b: b.samples.rows):  # type: ignore[attr-defined]
                bounds = [(b.samples.lo, b.samples.hi) for b in group]  # type: ignore[attr-defined]
                self.digest = rows.chain_digest(self.digest, bounds)
        self.batch_samples += [len(batch.samples) for batch in batches]
        if self.first_start is None:
            self.first_start = batches[0].start
        self.last_end = batches[-1].end

    def _learned_one(self, samples: Sequence[Labelled]) -> None:
        records = self.records
        # The four fields in one C call.
        for features_at, features_offset, label_at, label_offset in map(_WHERE, samples):
            records[features_at].append(features_offset)
            records[label_at].append(label_offset)
        self.digest = chain_digest(self.digest, samples)

    @property
    def batches(self) -> int:
        return len(self.batch_samples)

    @property
    def samples(self) -> int:
        return self.scores.samples

    def ranges(self) -> dict[str, list[list[int]]]:
        return {str(name): offset_ranges(offsets) for name, offsets in sorted(self.records.items())}

    def describe(self) -> dict[str, Any]:
        """What a version's lineage says it learned (None for the baseline, whose lineage is
        its source, and where a checkpoint of an older release left it unknown)."""
        ranges = self.ranges()
        return {
            # partition -> [first, last]: the span of the records learned.
            "input_offsets": {name: [runs[0][0], runs[-1][1]] for name, runs in ranges.items()},
            "learned": {
                "format": LEARNED_FORMAT,
                "records": ranges,
                "batch_samples": self.batch_samples,
                "digest": self.digest,
                "event_time": [self.first_start, self.last_end],
            }
            if self.exact and self.parent is not None
            else None,
        }

    def metrics(self) -> dict[str, Any]:
        return {
            "prequential": self.scores.as_dict(),
            "batches": self.batches,
            "rounds_per_batch": self.rounds,
            "idle_partitions": self.idle,
        }

    def state(self) -> dict[str, Any]:
        if isinstance(self.parent, PendingVersion):
            raise RuntimeError("the parent is not published yet: settle the trainer first")
        return {
            "parent": self.parent,
            "records": self.ranges(),
            "batch_samples": self.batch_samples,
            "digest": self.digest,
            "event_time": [self.first_start, self.last_end],
            "exact": self.exact,
            "scores": self.scores.state(),
            "parent_scores": self.parent_scores.state(),
            "rounds": self.rounds,
            "idle": self.idle,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Lineage:
        if "records" not in state:  # a checkpoint from before lineage recorded its records
            first_start = last_end = None
            batch_samples = [0] * int(state["batches"])
            records: defaultdict[str, list[int]] = defaultdict(list)
            exact, digest = False, EMPTY_DIGEST
        else:
            first_start, last_end = state["event_time"]
            batch_samples = [int(n) for n in state["batch_samples"]]
            records = defaultdict(list)
            records.update((name, expand(runs)) for name, runs in state["records"].items())
            exact, digest = bool(state["exact"]), str(state["digest"])
        return cls(
            parent=state["parent"],
            records=records,
            batch_samples=batch_samples,
            digest=digest,
            first_start=first_start,
            last_end=last_end,
            exact=exact,
            scores=Scores.from_state(state["scores"]),
            parent_scores=Scores.from_state(state["parent_scores"]),
            rounds=[int(r) for r in state["rounds"]],
            idle=list(state.get("idle", [])),
        )
