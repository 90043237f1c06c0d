import random

import pytest

from millrace.artifacts import ArtifactRejected, dump_model, load_model, sha256_hex, verify
from millrace.evaluation import Scores
from millrace.join import Pairs, join_all
from millrace.learners import LogisticRegression
from millrace.records import FeatureRecord, LabelRecord
from millrace.signing import SigningKey, generate_keypair


def _stream(n: int, seed: int = 7) -> tuple[list[dict[str, float]], list[float]]:
    rng = random.Random(seed)
    X, y = [], []
    for _ in range(n):
        late_before = rng.random() < 0.3
        carrier = rng.choice("ABC")
        X.append({"late_before": float(late_before), f"carrier={carrier}": 1.0})
        p = 0.7 if late_before else (0.3 if carrier == "A" else 0.1)
        y.append(1.0 if rng.random() < p else 0.0)
    return X, y


def test_rounds_lower_the_loss_and_the_model_learns_the_signal():
    X, y = _stream(2000)
    model = LogisticRegression(max_rounds=30, tol=0.0)
    stats = model.learn_many(X, y)
    assert stats[-1].loss < stats[0].loss - 0.05
    assert (
        model.predict_proba_one({"late_before": 1.0})[True]
        > model.predict_proba_one({"carrier=C": 1.0})[True]
    )


def test_same_batches_give_the_same_bytes_and_state_round_trips():
    X, y = _stream(3000)

    def train() -> bytes:
        model = LogisticRegression()
        for start in range(0, len(X), 500):
            model.learn_many(X[start : start + 500], y[start : start + 500])
        return dump_model(model)

    first, second = train(), train()
    assert first == second
    restored = load_model(first)
    assert dump_model(restored) == first
    assert restored.predict_proba_one(X[0]) == load_model(second).predict_proba_one(X[0])


def test_tampered_or_unsigned_artifacts_are_refused():
    data = dump_model(LogisticRegression())
    digest = sha256_hex(data)
    signer = SigningKey.from_text(generate_keypair()[0])
    someone_else = SigningKey.from_text(generate_keypair()[0])
    public = signer.verify_key()
    verify(data, digest, signer.sign(data), public)
    with pytest.raises(ArtifactRejected):
        verify(data.replace(b'"bias":0.0', b'"bias":9.0'), digest, signer.sign(data), public)
    with pytest.raises(ArtifactRejected):
        verify(data, digest, someone_else.sign(data), public)
    with pytest.raises(ArtifactRejected):
        load_model(b"\x80\x04\x95 pickle bytes")


def test_pairs_match_in_either_order_and_evict_the_oldest_over_the_limit() -> None:
    pairs: Pairs[str, float] = Pairs(limit=2)
    assert pairs.add_left("a", "fa") is None
    assert pairs.add_right("a", 1.0) == "fa"
    assert pairs.add_right("b", 0.0) is None
    assert pairs.add_left("b", "fb") == 0.0
    for key in ("c", "d", "e"):
        assert pairs.add_left(key, f"f{key}") is None
    assert list(pairs.left) == ["d", "e"] and pairs.evicted == 1 and len(pairs) == 2


def test_join_all_pairs_a_bounded_set_in_time_order() -> None:
    features = [
        FeatureRecord("b", "k", 20, {"x": 2.0}),
        FeatureRecord("a", "k", 10, {"x": 1.0}),
        FeatureRecord("c", "k", 5, {}),
    ]
    labels = [LabelRecord("a", "k", 11, 1.0), LabelRecord("b", "k", 21, 0.0)]
    samples = join_all(features, labels)
    assert [(s.id, s.ts, s.features, s.label) for s in samples] == [
        ("a", 10, {"x": 1.0}, 1.0),
        ("b", 20, {"x": 2.0}, 0.0),
    ]


def test_prequential_scores():
    import numpy as np

    scores = Scores()
    scores.add(np.array([0.9, 0.2]), [1.0, 0.0])
    assert scores.accuracy == 1.0
    assert scores.log_loss == pytest.approx(-(np.log(0.9) + np.log(0.8)) / 2)


def test_auc_from_mergeable_histograms_matches_the_exact_one():
    import numpy as np

    from millrace.evaluation import RollingScores

    rng = np.random.default_rng(3)
    y = (rng.random(5000) < 0.3).astype(float)
    p = np.clip(0.3 + 0.25 * (y - 0.3) + rng.normal(0, 0.2, 5000), 0, 1)
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    n_pos = y.sum()
    exact = (ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos))

    whole, merged, rolling = Scores(), Scores(), RollingScores(batches=4)
    whole.add(p, y)
    for chunk in range(10):
        part = Scores()
        part.add(p[chunk * 500 : (chunk + 1) * 500], y[chunk * 500 : (chunk + 1) * 500])
        merged.merge(Scores.from_state(part.state()))
        chunk_p, chunk_y = p[chunk * 500 : (chunk + 1) * 500], y[chunk * 500 : (chunk + 1) * 500]
        rolling.add_windows(chunk_p, chunk_y, np.array([0, 500]), np.array([part.log_loss_sum]))
    assert whole.auc == pytest.approx(exact, abs=1e-3)
    assert merged.auc == whole.auc and merged.samples == 5000
    last_four = Scores()
    last_four.add(p[3000:], y[3000:])
    total = rolling.total()
    assert total.samples == 2000 and total.auc == last_four.auc
    assert total.log_loss == pytest.approx(last_four.log_loss, rel=1e-12)
    restored = RollingScores(batches=4)
    restored.restore(rolling.state())
    assert restored.total().as_dict() == total.as_dict()
