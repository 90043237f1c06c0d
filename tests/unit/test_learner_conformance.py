"""Every learner, every conformance check (``millrace.learners.checks``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from river import linear_model

from millrace.learners import Classifier, LogisticRegression, RiverLearner, make_learner
from millrace.learners.checks import yield_checks

LEARNERS: dict[str, Callable[[], Classifier]] = {
    "logreg-sgd": lambda: LogisticRegression(),
    "logreg-sgd-rounds": lambda: LogisticRegression(max_rounds=5, tol=0.0),
    "logreg-adagrad": lambda: LogisticRegression(optimizer="adagrad", lr=0.1, max_rounds=3),
    "logreg-ftrl": lambda: LogisticRegression(optimizer="ftrl", l1=0.01, max_rounds=2),
    "river-logreg": lambda: RiverLearner(linear_model.LogisticRegression()),
    "river-by-path": lambda: make_learner("river.linear_model.PAClassifier", {"C": 0.5}),
}


@pytest.mark.parametrize(
    ("name", "check"),
    [(name, check) for name, build in LEARNERS.items() for check in yield_checks(build())],
    ids=lambda value: value if isinstance(value, str) else value.__name__,
)
def test_learner_conforms(name: str, check: Callable[[Classifier], None]) -> None:
    check(LEARNERS[name]())


def test_make_learner_names_what_it_cannot_build() -> None:
    with pytest.raises(ValueError, match=r"unknown learner 'no\.such\.Thing'"):
        make_learner("no.such.Thing")
    with pytest.raises(TypeError):
        make_learner("logistic_regression", {"no_such_param": 1})
    with pytest.raises(ValueError, match="not a classifier"):
        make_learner("river.cluster.KMeans")


def test_hyperparameters_are_the_constructor_arguments() -> None:
    model = LogisticRegression(lr=0.5, optimizer="ftrl")
    assert model.config["lr"] == 0.5 and model.config["optimizer"] == "ftrl"
    assert set(model.config) == {
        "lr", "l2", "max_rounds", "tol", "dim_log2", "optimizer", "alpha", "beta", "l1", "decay",
    }  # fmt: skip
    assert model.clone().config == model.config
