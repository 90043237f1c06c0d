"""Prequential scores: each batch is scored by the model *before* it learns from it.

:class:`Scores` sums log-loss and accuracy exactly and keeps ROC AUC as two histograms of the
predicted probability (positives, negatives; ``BINS`` equal bins), so scores of batches merge
into scores of versions and of rolling windows in constant memory, and a checkpoint holds them as
plain integers. Pairs that fall in the same bin count one half, as tied scores do, so the AUC is
exact up to the bin width.

>>> import numpy as np
>>> s = Scores()
>>> s.add(np.array([0.9, 0.8, 0.3, 0.1]), [1.0, 0.0, 1.0, 0.0])
>>> s.accuracy, s.auc
(0.5, 0.75)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BINS = 1000
_EPS = 1e-12


def log_loss_sum(y: Sequence[float] | np.ndarray, p: np.ndarray) -> float:
    """The summed log-loss of probabilities ``p`` for labels ``y`` (clipped away from 0 and 1).

    >>> round(log_loss_sum([1.0, 0.0], np.array([0.5, 0.5])), 4)
    1.3863
    """
    target = np.asarray(y, dtype=float)
    clipped = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.sum(target * np.log(clipped) + (1 - target) * np.log(1 - clipped)))


def log_loss(y: Sequence[float] | np.ndarray, p: np.ndarray) -> float:
    """The mean log-loss (NaN for no samples)."""
    return log_loss_sum(y, p) / len(p) if len(p) else float("nan")


@dataclass
class Scores:
    samples: int = 0
    log_loss_sum: float = 0.0
    correct: int = 0
    positives: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    negatives: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))

    def add(self, p: np.ndarray, y: Sequence[float] | np.ndarray) -> None:
        target = np.asarray(y, dtype=float)
        self.log_loss_sum += log_loss_sum(target, p)
        positive = target >= 0.5
        self.correct += int(np.sum((p >= 0.5) == positive))
        self.samples += len(target)
        bins = np.minimum((np.asarray(p) * BINS).astype(np.int64), BINS - 1)
        np.add.at(self.positives, bins[positive], 1)
        np.add.at(self.negatives, bins[~positive], 1)

    def merge(self, other: Scores) -> None:
        self.samples += other.samples
        self.log_loss_sum += other.log_loss_sum
        self.correct += other.correct
        self.positives += other.positives
        self.negatives += other.negatives

    @property
    def log_loss(self) -> float | None:
        return self.log_loss_sum / self.samples if self.samples else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.samples if self.samples else None

    @property
    def auc(self) -> float | None:
        """ROC AUC, or None until both classes were seen."""
        n_pos, n_neg = int(self.positives.sum()), int(self.negatives.sum())
        if not n_pos or not n_neg:
            return None
        below = np.cumsum(self.negatives) - self.negatives  # negatives in lower bins
        pairs = np.sum(self.positives * (below + 0.5 * self.negatives))
        return float(pairs / (n_pos * n_neg))

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "samples": self.samples,
            "log_loss": self.log_loss,
            "accuracy": self.accuracy,
            "auc": self.auc,
        }

    def state(self) -> dict[str, Any]:
        """Plain data for a checkpoint; the histograms as their non-empty bins."""
        return {
            "samples": self.samples,
            "log_loss_sum": self.log_loss_sum,
            "correct": self.correct,
            "positives": _sparse(self.positives),
            "negatives": _sparse(self.negatives),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Scores:
        return cls(
            int(state["samples"]),
            float(state["log_loss_sum"]),
            int(state["correct"]),
            _dense(state["positives"]),
            _dense(state["negatives"]),
        )


class RollingScores:
    """Scores over the last ``batches`` batches, summed from the window when asked (in window
    order, so a restored window gives the same bits as one that never stopped)."""

    def __init__(self, batches: int = 288) -> None:
        self.window: deque[Scores] = deque(maxlen=batches)

    def add(self, batch: Scores) -> None:
        self.window.append(batch)

    def total(self) -> Scores:
        total = Scores()
        for batch in self.window:
            total.merge(batch)
        return total

    def state(self) -> list[dict[str, Any]]:
        return [s.state() for s in self.window]

    def restore(self, state: list[dict[str, Any]]) -> None:
        self.window.clear()
        for item in state:
            self.add(Scores.from_state(item))


def _sparse(histogram: np.ndarray) -> list[list[int]]:
    (bins,) = np.nonzero(histogram)
    return [[int(b), int(histogram[b])] for b in bins]


def _dense(pairs: list[list[int]]) -> np.ndarray:
    histogram = np.zeros(BINS, dtype=np.int64)
    for b, count in pairs:
        histogram[int(b)] = int(count)
    return histogram
