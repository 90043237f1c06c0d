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

    def learn_many(
        self, X: Sequence[Features], y: Sequence[float], max_rounds: int | None = None
    ) -> list[RoundStats]:
        """Learn one mini-batch in rounds; ``max_rounds`` overrides the learner's own limit for
        this batch (the trainer's baseline)."""
        ...

    def predict_proba_one(self, x: Features) -> dict[bool, float]: ...

    def predict_proba_many(self, X: Sequence[Features]) -> Any: ...

    def state(self) -> dict[str, Any]: ...


class PickleRefused(ValueError):
    pass


def learner_from_state(state: dict[str, Any], allow_pickle: bool = False) -> Learner:
    """Rebuild a learner; pickle-based states (River) only with ``allow_pickle`` — that is, from
    bytes whose signature was verified."""
    from millrace.learners.kmeans import OnlineKMeans
    from millrace.learners.logreg import LogisticRegression
    from millrace.learners.river_adapter import RiverLearner

    kinds: dict[str, Any] = {
        cls.kind: cls for cls in (LogisticRegression, OnlineKMeans, RiverLearner)
    }
    kind = state.get("kind")
    if kind not in kinds:
        raise ValueError(f"unknown learner kind {kind!r}")
    if getattr(kinds[kind], "uses_pickle", False) and not allow_pickle:
        raise PickleRefused(f"a {kind} state is pickle: refused unless its artifact is signed")
    learner: Learner = kinds[kind].from_state(state)
    return learner
