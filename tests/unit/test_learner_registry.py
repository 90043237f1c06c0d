"""Learners register by kind when they are defined: a learner of one's own is found again by
`learner_from_state` (checkpoints, artifacts); a kind cannot be taken twice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pytest

from millrace.artifacts import dump_model, load_model
from millrace.learners import Classifier, LogisticRegression, RoundStats, learner_from_state


class Constant(Classifier):
    """Predicts the share of positives it has seen: the smallest learner there is."""

    kind = "test-constant"

    def __init__(self, positives: float = 0.0, seen: float = 0.0) -> None:
        self.positives, self.seen = positives, seen

    def learn_many(
        self, X: Any, y: Sequence[float], max_rounds: int | None = None
    ) -> list[RoundStats]:
        self.positives += sum(y)
        self.seen += len(y)
        return []

    def predict_proba_many(self, X: Any) -> np.ndarray:
        share = self.positives / self.seen if self.seen else 0.5
        return np.full(len(X), share)

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state_version": 1,
            "positives": self.positives,
            "seen": self.seen,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        cls.check_state(state)
        return cls(state["positives"], state["seen"])


def test_a_learner_of_ones_own_is_found_again_by_its_kind():
    learner = Constant()
    learner.learn_many([{}, {}, {}, {}], [1.0, 0.0, 1.0, 1.0])
    again = learner_from_state(learner.state())
    assert isinstance(again, Constant) and again.predict_proba_many([{}])[0] == 0.75
    assert load_model(dump_model(learner)).state() == learner.state()


def test_a_kind_cannot_be_taken_twice():
    with pytest.raises(TypeError, match="learner kind 'logistic_regression' is taken"):
        type("Impostor", (Constant,), {"kind": LogisticRegression.kind})
