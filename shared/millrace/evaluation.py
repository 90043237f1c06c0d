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
from typing import Any, NamedTuple

import numpy as np

BINS = 1000
#: Probabilities are clipped this far from 0 and 1 before the log.
LOG_LOSS_EPS = 1e-12


def log_loss_sum(y: Sequence[float] | np.ndarray, p: np.ndarray) -> float:
    """The summed log-loss of probabilities ``p`` for labels ``y`` (clipped away from 0 and 1).

    >>> round(log_loss_sum([1.0, 0.0], np.array([0.5, 0.5])), 4)
    1.3863
    """
    target = np.asarray(y, dtype=float)
    clipped = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
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
        self.add_windows(p, target, np.array([0, len(target)]), np.array([log_loss_sum(target, p)]))

    def add_windows(
        self, p: np.ndarray, y: np.ndarray, offsets: np.ndarray, loss_sums: np.ndarray
    ) -> None:
        """Add consecutive batches at once: probabilities ``p`` and labels ``y`` of all their
        rows, and each batch's summed log-loss. The sums are added one batch at a time, so the
        total has the same bits however batches are grouped into calls."""
        for batch_sum in loss_sums.tolist():
            self.log_loss_sum += batch_sum
        positive = y >= 0.5
        self.correct += int(np.count_nonzero((p >= 0.5) == positive))
        self.samples += len(y)
        bins = _bins(p)
        self.positives += np.bincount(bins[positive], minlength=BINS)
        self.negatives += np.bincount(bins[~positive], minlength=BINS)

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


class BatchScore(NamedTuple):
    """One batch's scores, compact: the histogram bins of its rows and which rows were
    positive (views into the arrays of the call that added it; the histograms are counted when
    asked, so adding a batch is two slices)."""

    samples: int
    log_loss_sum: float
    correct: int
    bins: np.ndarray
    positive: np.ndarray

    @property
    def positive_bins(self) -> np.ndarray:
        bins: np.ndarray = self.bins[self.positive]
        return bins

    @property
    def negative_bins(self) -> np.ndarray:
        bins: np.ndarray = self.bins[~self.positive]
        return bins


class RollingScores:
    """Scores over the last ``batches`` batches, summed from the window when asked (in window
    order, so a restored window gives the same bits as one that never stopped)."""

    def __init__(self, batches: int = 288) -> None:
        self.window: deque[BatchScore] = deque(maxlen=batches)

    def add_windows(
        self, p: np.ndarray, y: np.ndarray, offsets: np.ndarray, loss_sums: np.ndarray
    ) -> None:
        """Add consecutive batches, as :meth:`Scores.add_windows` takes them."""
        bins = _bins(p)
        positive = y >= 0.5
        hits = np.zeros(len(y) + 1, dtype=np.int64)
        np.cumsum((p >= 0.5) == positive, out=hits[1:])
        correct = (hits[offsets[1:]] - hits[offsets[:-1]]).tolist()
        bounds = offsets.tolist()
        append = self.window.append
        for w, batch_sum in enumerate(loss_sums.tolist()):
            a, b = bounds[w], bounds[w + 1]
            append(BatchScore(b - a, batch_sum, correct[w], bins[a:b], positive[a:b]))

    def total(self) -> Scores:
        total = Scores()
        for batch in self.window:
            total.samples += batch.samples
            total.log_loss_sum += batch.log_loss_sum
            total.correct += batch.correct
        if self.window:
            bins = np.concatenate([b.bins for b in self.window])
            positive = np.concatenate([b.positive for b in self.window])
            total.positives += np.bincount(bins[positive], minlength=BINS)
            total.negatives += np.bincount(bins[~positive], minlength=BINS)
        return total

    def state(self) -> list[list[Any]]:
        return [
            [
                b.samples,
                b.log_loss_sum,
                b.correct,
                b.positive_bins.tolist(),
                b.negative_bins.tolist(),
            ]
            for b in self.window
        ]

    def restore(self, state: list[list[Any]]) -> None:
        self.window.clear()
        for samples, loss_sum, correct, positive_bins, negative_bins in state:
            bins = np.asarray([*positive_bins, *negative_bins], dtype=np.int64)
            positive = np.arange(len(bins)) < len(positive_bins)
            self.window.append(
                BatchScore(int(samples), float(loss_sum), int(correct), bins, positive)
            )


def _bins(p: np.ndarray) -> np.ndarray:
    return np.minimum((np.asarray(p) * BINS).astype(np.int64), BINS - 1)


def _sparse(histogram: np.ndarray) -> list[list[int]]:
    (bins,) = np.nonzero(histogram)
    return [[int(b), int(histogram[b])] for b in bins]


def _dense(pairs: list[list[int]]) -> np.ndarray:
    histogram = np.zeros(BINS, dtype=np.int64)
    for b, count in pairs:
        histogram[int(b)] = int(count)
    return histogram
