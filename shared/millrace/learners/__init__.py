"""Learners with River's interface (``learn_one``/``learn_many``/``predict_proba_one``) and a
safe, versioned ``state()``/``from_state()`` serialization (JSON; pickle only for River
estimators, and only from verified artifacts). :func:`make_learner` builds one by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from millrace.dotted import load_object
from millrace.learners.base import (
    Classifier,
    Learner,
    PickleRefused,
    RoundStats,
    learner_class,
    learner_from_state,
)
from millrace.learners.logreg import LogisticRegression
from millrace.learners.river_adapter import RiverLearner

__all__ = [
    "Classifier",
    "Learner",
    "LogisticRegression",
    "PickleRefused",
    "RiverLearner",
    "RoundStats",
    "learner_class",
    "learner_from_state",
    "make_learner",
]


def make_learner(name: str, params: Mapping[str, Any] | None = None) -> Classifier:
    """``logistic_regression``, or the dotted path of a River classifier, with its
    constructor's arguments.

    >>> make_learner("logistic_regression", {"lr": 0.05}).lr
    0.05
    >>> make_learner("river.linear_model.LogisticRegression").config
    {'estimator': 'LogisticRegression ...'}
    >>> make_learner("river.cluster.KMeans")
    Traceback (most recent call last):
    ...
    ValueError: river.cluster.KMeans is not a classifier (learn_one and predict_proba_one)
    """
    params = dict(params or {})
    if name == LogisticRegression.kind:
        return LogisticRegression(**params)
    try:
        estimator_class = load_object(name, "learner")
    except ValueError as exc:
        raise ValueError(
            f"unknown learner {name!r}: use {LogisticRegression.kind!r} or the dotted path of a "
            f"River classifier ({exc})"
        ) from None
    estimator = estimator_class(**params)
    if not all(callable(getattr(estimator, m, None)) for m in ("learn_one", "predict_proba_one")):
        raise ValueError(f"{name} is not a classifier (learn_one and predict_proba_one)")
    return RiverLearner(estimator)
