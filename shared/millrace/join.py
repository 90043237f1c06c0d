"""Pairing two streams by id: feature records with labels, predictions with labels.

:class:`Pairs` holds the records of each side that still wait for their partner; whichever side
arrives second takes its partner out. It is the one pairing primitive: the trainer's windowed
join, the baseline's join and the predictor's live-quality join all use it.

>>> pairs: Pairs[str, float] = Pairs(limit=2)
>>> pairs.add_left("a", "features of a") is None
True
>>> pairs.add_right("a", 1.0)
'features of a'
>>> for key in "xyz":
...     _ = pairs.add_right(key, 0.0)
>>> sorted(pairs.right), pairs.evicted
(['y', 'z'], 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, NamedTuple, Protocol, TypeVar

from millrace.records import FeatureRecord, LabelRecord

L = TypeVar("L")
R = TypeVar("R")
V = TypeVar("V")


class Labelled(Protocol):
    """What learning reads of a joined sample: a :class:`Sample`, or the trainer's own form of
    one that also says where its records were read."""

    @property
    def id(self) -> str: ...
    @property
    def ts(self) -> int: ...
    @property
    def features(self) -> dict[str, float]: ...
    @property
    def label(self) -> float: ...


class Sample(NamedTuple):
    """A feature record joined with its label (a tuple: the trainer makes one per sample)."""

    id: str
    ts: int
    features: dict[str, float]
    label: float


class Pairs(Generic[L, R]):
    """Records of two sides waiting for a partner with the same id. With ``limit``, each side
    keeps at most that many, the oldest arrivals leaving first (counted in ``evicted``)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.left: dict[str, L] = {}
        self.right: dict[str, R] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.left) + len(self.right)

    def add_left(self, key: str, value: L) -> R | None:
        """The waiting right-hand partner of ``key`` (taken out), or None and ``value`` waits."""
        partner = self.right.pop(key, None)
        if partner is None:
            self._wait(self.left, key, value)
        return partner

    def add_right(self, key: str, value: R) -> L | None:
        """The waiting left-hand partner of ``key`` (taken out), or None and ``value`` waits."""
        partner = self.left.pop(key, None)
        if partner is None:
            self._wait(self.right, key, value)
        return partner

    def _wait(self, side: dict[str, V], key: str, value: V) -> None:
        side[key] = value
        if self.limit is not None and len(side) > self.limit:
            del side[next(iter(side))]
            self.evicted += 1


def join_all(features: Sequence[FeatureRecord], labels: Sequence[LabelRecord]) -> list[Sample]:
    """Every feature record that has a label, in (time, id) order: a bounded data set (a
    backfill) as one batch."""
    pairs: Pairs[FeatureRecord, LabelRecord] = Pairs()
    for record in features:
        pairs.add_left(record.id, record)
    joined = [
        Sample(f.id, f.ts, f.features, r.label)
        for r in labels
        if (f := pairs.add_right(r.id, r)) is not None
    ]
    return sorted(joined, key=lambda s: (s.ts, s.id))
