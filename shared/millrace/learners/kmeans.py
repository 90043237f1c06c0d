"""Online K-Means: Lloyd iterations per mini-batch with a decay factor (as Flink ML's
OnlineKMeans), over named numeric features."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from millrace.learners.base import Features, RoundStats


class OnlineKMeans:
    """Clusters that follow a stream.

    Each mini-batch is iterated in rounds: points are assigned to the nearest centroid and each
    centroid becomes the weighted mean of its history and its batch points,
    ``(decay * w * c + n * m) / (decay * w + n)``; rounds stop at ``max_rounds`` or when the
    mean squared distance improves by less than ``tol``. A ``decay`` below 1 forgets old points,
    so a cluster that moves is followed. The first batch's first ``k`` distinct points seed the
    centroids, so there is no randomness.

    Parameters
    ----------
    k
        Number of clusters.
    features
        The feature names, in the order of the centroid coordinates.
    decay
        Weight kept by the past at each batch (1 = never forget).

    Examples
    --------

    >>> model = OnlineKMeans(k=2, features=("x", "y"))
    >>> batch = [{"x": 0.0, "y": 0.1}, {"x": 10.0, "y": 9.9}, {"x": 0.2, "y": 0.0}]
    >>> stats = model.learn_many(batch)
    >>> model.predict_one({"x": 0.1, "y": 0.0}) != model.predict_one({"x": 10.0, "y": 10.0})
    True

    """

    kind = "online_kmeans"
    state_version = 1

    def __init__(
        self,
        k: int,
        features: Sequence[str],
        decay: float = 1.0,
        max_rounds: int = 10,
        tol: float = 1e-6,
    ) -> None:
        if k < 1 or not features or not 0.0 < decay <= 1.0:
            raise ValueError("need k >= 1, at least one feature and 0 < decay <= 1")
        self.k = k
        self.features = tuple(features)
        self.decay = decay
        self.max_rounds = max_rounds
        self.tol = tol
        self.centroids = np.zeros((0, len(self.features)))
        self.weights = np.zeros(0)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "features": list(self.features),
            "decay": self.decay,
            "max_rounds": self.max_rounds,
            "tol": self.tol,
        }

    def _matrix(self, X: Sequence[Features]) -> np.ndarray:
        return np.array([[x.get(f, 0.0) for f in self.features] for x in X], dtype=float)

    def _seed(self, points: np.ndarray) -> None:
        distinct: list[np.ndarray] = []
        for point in points:
            if not any(np.array_equal(point, d) for d in distinct):
                distinct.append(point)
            if len(distinct) == self.k:
                break
        self.centroids = np.array(distinct, dtype=float)
        self.weights = np.zeros(len(distinct))

    def _assign(self, points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, float]:
        distances = ((points[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
        nearest = distances.argmin(axis=1)
        return nearest, float(distances[np.arange(len(points)), nearest].mean())

    def learn_many(
        self,
        X: Sequence[Features],
        y: Sequence[float] | None = None,
        max_rounds: int | None = None,
    ) -> list[RoundStats]:
        points = self._matrix(X)
        if len(points) == 0:
            return []
        if len(self.centroids) < self.k:
            self._seed(points)
        past_centroids, past_weights = self.centroids.copy(), self.weights * self.decay
        centroids = past_centroids.copy()
        stats: list[RoundStats] = []
        previous = np.inf
        for round_no in range(1, (self.max_rounds if max_rounds is None else max_rounds) + 1):
            nearest, loss = self._assign(points, centroids)
            stats.append(RoundStats(round_no, loss, len(points)))
            if previous - loss < self.tol and round_no > 1:
                break
            previous = loss
            counts = np.bincount(nearest, minlength=len(centroids)).astype(float)
            sums = np.zeros_like(centroids)
            np.add.at(sums, nearest, points)
            total = past_weights + counts
            moved = total > 0
            centroids = past_centroids.copy()
            centroids[moved] = (
                past_weights[moved, None] * past_centroids[moved] + sums[moved]
            ) / total[moved, None]
        nearest, _ = self._assign(points, centroids)
        self.centroids = centroids
        self.weights = past_weights + np.bincount(nearest, minlength=len(centroids))
        return stats

    def learn_one(self, x: Features, y: float | None = None) -> None:
        self.learn_many([x])

    def predict_one(self, x: Features) -> int:
        return int(self._assign(self._matrix([x]), self.centroids)[0][0])

    def predict_many(self, X: Sequence[Features]) -> np.ndarray:
        return self._assign(self._matrix(X), self.centroids)[0]

    def predict_proba_one(self, x: Features) -> dict[bool, float]:
        raise NotImplementedError("K-Means assigns clusters; use predict_one")

    def predict_proba_many(self, X: Sequence[Features]) -> np.ndarray:
        raise NotImplementedError("K-Means assigns clusters; use predict_many")

    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state_version": self.state_version,
            "config": self.config,
            "centroids": base64.b64encode(self.centroids.astype("<f8").tobytes()).decode(),
            "weights": base64.b64encode(self.weights.astype("<f8").tobytes()).decode(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> OnlineKMeans:
        if state.get("kind") != cls.kind or state.get("state_version") != cls.state_version:
            raise ValueError("not an online_kmeans v1 state")
        model = cls(**state["config"])
        weights = np.frombuffer(base64.b64decode(state["weights"], validate=True), dtype="<f8")
        centroids = np.frombuffer(base64.b64decode(state["centroids"], validate=True), dtype="<f8")
        model.weights = weights.copy()
        model.centroids = centroids.reshape(len(weights), len(model.features)).copy()
        return model
