"""The conformance checks every learner passes, in River's ``checks`` manner: each check takes a
fresh learner and raises ``AssertionError`` when the learner breaks the contract the trainer and
the predictor rely on. :func:`yield_checks` lists them; the test suite runs them all over every
learner.

>>> from millrace.learners import LogisticRegression
>>> for check in yield_checks(LogisticRegression()):
...     check(LogisticRegression())
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from millrace.artifacts import dump_model
from millrace.learners.base import Classifier, Features, learner_from_state

Check = Callable[[Classifier], None]
Batches = list[tuple[list[Features], list[float]]]


def _batches(seed: int = 7, batches: int = 6, size: int = 40) -> Batches:
    """Deterministic synthetic batches: a signal in ``a``, noise in ``b``, a one-hot family."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        a = rng.normal(size=size)
        b = rng.normal(size=size)
        y = (a + 0.3 * rng.normal(size=size) > 0).astype(float)
        X = [{"a": float(a[i]), "b": float(b[i]), f"kind={i % 3}": 1.0} for i in range(size)]
        out.append((X, [float(v) for v in y]))
    return out


def _learn(learner: Classifier, batches: Batches) -> None:
    for X, y in batches:
        learner.learn_many(X, y)


def _probe() -> list[Features]:
    return [{"a": 1.0, "b": 0.0, "kind=0": 1.0}, {"a": -1.0}, {}, {"never seen": 3.0}]


def check_state_round_trip(learner: Classifier) -> None:
    """A learner rebuilt from its state predicts exactly the same, and keeps learning the same."""
    _learn(learner, _batches())
    restored = learner_from_state(learner.state(), allow_pickle=True)
    assert np.array_equal(
        learner.predict_proba_many(_probe()), restored.predict_proba_many(_probe())
    )
    more = _batches(seed=8, batches=2)
    _learn(learner, more)
    _learn(restored, more)
    assert dump_model(learner) == dump_model(restored)


def check_deterministic_bytes(learner: Classifier) -> None:
    """The same batches give the same artifact bytes."""
    twin = learner.clone()
    _learn(learner, _batches())
    _learn(twin, _batches())
    assert dump_model(learner) == dump_model(twin)


def check_probabilities(learner: Classifier) -> None:
    """Batch predictions are probabilities, one per row, equal to the one-at-a-time ones."""
    _learn(learner, _batches())
    probe = _probe()
    many = learner.predict_proba_many(probe)
    assert many.shape == (len(probe),)
    assert np.all((many >= 0.0) & (many <= 1.0))
    for x, p in zip(probe, many, strict=True):
        one = learner.predict_proba_one(x)
        assert abs(one[True] - p) < 1e-12 and abs(one[True] + one[False] - 1.0) < 1e-12


def check_emerging_features(learner: Classifier) -> None:
    """A feature first seen mid-stream is learned from without disturbing the others."""
    _learn(learner, _batches(batches=3))
    X, y = _batches(seed=9, batches=1)[0]
    learner.learn_many([{**x, "new": float(i % 2)} for i, x in enumerate(X)], y)
    assert np.all(np.isfinite(learner.predict_proba_many([{"new": 1.0}, {"a": 1.0}])))


def check_disappearing_features(learner: Classifier) -> None:
    """Batches that lack features seen before are learned, and rows without them predicted."""
    _learn(learner, _batches(batches=3))
    X, y = _batches(seed=10, batches=1)[0]
    learner.learn_many([{"a": x["a"]} for x in X], y)
    assert np.all(np.isfinite(learner.predict_proba_many([{"a": 0.5}, {"b": 0.5}])))


def check_empty_batch(learner: Classifier) -> None:
    """An empty batch runs no round and changes nothing."""
    _learn(learner, _batches(batches=2))
    before = dump_model(learner)
    assert learner.learn_many([], []) == []
    assert dump_model(learner) == before
    assert learner.predict_proba_many([]).shape == (0,)


def check_learn_one_is_learn_many_of_one(learner: Classifier) -> None:
    """``learn_one`` is a mini-batch of one."""
    twin = learner.clone()
    for X, y in _batches(batches=2, size=10):
        for x, target in zip(X, y, strict=True):
            learner.learn_one(x, target)
            twin.learn_many([x], [target])
    assert dump_model(learner) == dump_model(twin)


def check_encoded_batches_predict_like_dicts(learner: Classifier) -> None:
    """What :meth:`encode_many` returns scores and learns like the feature dicts it encodes."""
    twin = learner.clone()
    for X, y in _batches(batches=3):
        encoded = learner.encode_many(X)
        assert np.array_equal(learner.predict_proba_many(encoded), twin.predict_proba_many(X))
        learner.learn_many(encoded, y)
        twin.learn_many(X, y)
    assert dump_model(learner) == dump_model(twin)


def yield_checks(learner: Classifier) -> Iterator[Check]:
    """Every check that applies to ``learner`` (all of them, for a classifier)."""
    yield check_state_round_trip
    yield check_deterministic_bytes
    yield check_probabilities
    yield check_emerging_features
    yield check_disappearing_features
    yield check_empty_batch
    yield check_learn_one_is_learn_many_of_one
    yield check_encoded_batches_predict_like_dicts
