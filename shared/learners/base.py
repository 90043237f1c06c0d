"""What every Millrace learner offers, and how a serialized state finds its class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Features = dict[str, float]


@dataclass(frozen=True)
class RoundStats:
    round: int
    loss: float
    samples: int


class Learner(Protocol):
    kind: str

    def learn_one(self, x: Features, y: float) -> None: ...

    def learn_many(self, X: Sequence[Features], y: Sequence[float]) -> list[RoundStats]: ...

    def predict_proba_one(self, x: Features) -> dict[bool, float]: ...

    def predict_proba_many(self, X: Sequence[Features]) -> Any: ...

    def state(self) -> dict[str, Any]: ...


def learner_from_state(state: dict[str, Any]) -> Learner:
    from millrace.learners.logreg import LogisticRegression

    kinds: dict[str, Any] = {LogisticRegression.kind: LogisticRegression}
    kind = state.get("kind")
    if kind not in kinds:
        raise ValueError(f"unknown learner kind {kind!r}")
    learner: Learner = kinds[kind].from_state(state)
    return learner
