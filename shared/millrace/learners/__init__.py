"""Learners with River's interface (``learn_one``/``learn_many``/``predict_proba_one``) and a
safe, versioned ``state()``/``from_state()`` serialization (JSON, never pickle)."""

from millrace.learners.base import Learner, RoundStats, learner_from_state
from millrace.learners.kmeans import OnlineKMeans
from millrace.learners.logreg import LogisticRegression
from millrace.learners.river_adapter import RiverLearner

__all__ = [
    "Learner",
    "LogisticRegression",
    "OnlineKMeans",
    "RiverLearner",
    "RoundStats",
    "learner_from_state",
]
