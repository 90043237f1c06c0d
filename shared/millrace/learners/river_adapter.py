"""Any River classifier behind Millrace's learner interface.

River models serialize only with pickle, so this learner's state is pickle bytes: an artifact
holding it is loaded only after its sha256 and Ed25519 signature have been verified
(``load_model(..., allow_pickle=True)``); unsigned, it is refused.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from millrace.learners.base import Classifier, Features, RoundStats


class RiverLearner(Classifier):
    """Wraps a River classifier (``learn_one``/``predict_proba_one``); one pass per batch.

    Parameters
    ----------
    estimator
        A River classifier, e.g. ``river.linear_model.LogisticRegression()``.

    Examples
    --------

    >>> from river import linear_model
    >>> model = RiverLearner(linear_model.LogisticRegression())
    >>> _ = model.learn_many([{"x": 1.0}, {"x": -1.0}] * 20, [1.0, 0.0] * 20)
    >>> model.predict_proba_one({"x": 1.0})[True] > 0.5
    True
    """

    kind = "river"
    uses_pickle = True

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator

    @property
    def config(self) -> dict[str, Any]:
        return {"estimator": repr(self.estimator)}

    def clone(self) -> Self:
        return type(self)(self.estimator.clone())

    def learn_many(
        self, X: Sequence[Features], y: Sequence[float], max_rounds: int | None = None
    ) -> list[RoundStats]:
        """One pass of ``learn_one`` (River estimators have no rounds)."""
        if not X:
            return []
        for x, target in zip(X, y, strict=True):
            self.estimator.learn_one(x, bool(target))
        return [RoundStats(1, float("nan"), len(X))]

    def predict_proba_many(self, X: Sequence[Features]) -> np.ndarray:
        return np.array(
            [float(self.estimator.predict_proba_one(x).get(True, 0.0)) for x in X], dtype=float
        )

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state_version": self.state_version,
            "pickle": base64.b64encode(pickle.dumps(self.estimator)).decode(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Self:
        # Reached only through learner_from_state(..., allow_pickle=True): verified bytes.
        cls.check_state(state)
        return cls(pickle.loads(base64.b64decode(state["pickle"], validate=True)))
