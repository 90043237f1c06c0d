"""Prequential scores: each batch is scored by the model *before* it learns from it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


@dataclass
class Scores:
    samples: int = 0
    log_loss_sum: float = 0.0
    correct: int = 0

    def add(self, p: np.ndarray, y: Sequence[float]) -> None:
        target = np.asarray(y, dtype=float)
        clipped = np.clip(p, _EPS, 1 - _EPS)
        self.log_loss_sum += float(
            -np.sum(target * np.log(clipped) + (1 - target) * np.log(1 - clipped))
        )
        self.correct += int(np.sum((p >= 0.5) == (target >= 0.5)))
        self.samples += len(target)

    def merge(self, other: Scores) -> None:
        self.samples += other.samples
        self.log_loss_sum += other.log_loss_sum
        self.correct += other.correct

    @property
    def log_loss(self) -> float | None:
        return self.log_loss_sum / self.samples if self.samples else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.samples if self.samples else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"samples": self.samples, "log_loss": self.log_loss, "accuracy": self.accuracy}
