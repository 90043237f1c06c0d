import itertools
import random

import pytest

from millrace.artifacts import ArtifactRejected, dump_model, load_model
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.learners import LogisticRegression, RiverLearner
from millrace_flights.events import flight_events, load_flights, to_epoch_ms
from millrace_trainer.batching import WindowedJoin

HOUR = 3_600_000


@pytest.fixture(scope="module")
def records() -> list[tuple[str, dict]]:
    events = flight_events(load_flights(), to_epoch_ms("2013-01-01"), to_epoch_ms("2013-01-06"))
    result = backfill(
        Featurizer(load_feature_module("millrace_flights.features:FlightsFeatures")),
        from_envelopes(events),
    )
    # Three partitions per topic, each in event-time order, as the featurizer writes them.
    out = [(f"features/{hash(r['key']) % 3}", r) for r in result.features]
    out += [(f"labels/{hash(r['key']) % 3}", r) for r in result.labels]
    return out


def interleave(records: list[tuple[str, dict]], seed: int) -> list[tuple[str, dict]]:
    """Any consumption order that keeps each partition's own order."""
    queues: dict[str, list] = {}
    for partition, record in records:
        queues.setdefault(partition, []).append((partition, record))
    rng = random.Random(seed)
    out = []
    while queues:
        partition = rng.choice(sorted(queues))
        out.append(queues[partition].pop(0))
        if not queues[partition]:
            del queues[partition]
    return out


def train(
    order: list[tuple[str, dict]], check_every: int, batch_samples: int | None = None
) -> tuple[bytes, int]:
    join = WindowedJoin(window_ms=6 * HOUR, label_wait_ms=24 * HOUR, batch_samples=batch_samples)
    join.assign({p for p, _ in order})
    model = LogisticRegression()
    batches = 0

    def learn_ready() -> None:
        nonlocal batches
        for batch in join.ready():
            model.learn_many([s.features for s in batch.samples], [s.label for s in batch.samples])
            batches += 1

    for i, (partition, record) in enumerate(order):
        join.add(partition, record)
        if i % check_every == 0:
            learn_ready()
    learn_ready()
    return dump_model(model), batches


def test_same_records_in_any_order_train_the_same_bytes(records):
    first, batches = train(interleave(records, 1), check_every=1)
    second, again = train(interleave(records, 2), check_every=997)
    assert batches == again and batches >= 10
    assert first == second


def test_batches_by_count_are_exact_and_independent_of_the_order(records):
    first, batches = train(interleave(records, 4), check_every=1, batch_samples=64)
    second, again = train(interleave(records, 5), check_every=501, batch_samples=64)
    assert batches == again and batches >= 40
    assert first == second
    by_window, _ = train(interleave(records, 4), check_every=1)
    assert first != by_window

    order = interleave(records, 6)
    join = WindowedJoin(window_ms=HOUR, batch_samples=64)
    join.assign({p for p, _ in order})
    sizes, restored_at = [], len(order) // 2
    for i, (partition, record) in enumerate(order):
        join.add(partition, record)
        sizes += [len(b.samples) for b in join.ready()]
        if i == restored_at:  # a checkpoint with samples waiting for a full batch
            assert join.pending
            snapshot = __import__("orjson").dumps(join.snapshot())
            join = WindowedJoin(window_ms=HOUR, batch_samples=64)
            join.assign({p for p, _ in order})
            join.restore(__import__("orjson").loads(snapshot))
    assert sizes and set(sizes) == {64}


def test_join_buffer_snapshot_restores_exactly(records):
    order = interleave(records, 3)
    half = len(order) // 2
    join = WindowedJoin(window_ms=6 * HOUR)
    join.assign({p for p, _ in order})
    for partition, record in order[:half]:
        join.add(partition, record)
    restored = WindowedJoin(window_ms=6 * HOUR)
    restored.assign({p for p, _ in order})
    restored.restore(__import__("orjson").loads(__import__("orjson").dumps(join.snapshot())))
    for partition, record in order[half:]:
        join.add(partition, record)
        restored.add(partition, record)
    assert [(b.start, b.samples) for b in join.ready()] == [
        (b.start, b.samples) for b in restored.ready()
    ]


def test_labels_later_than_the_wait_are_not_learned():
    join = WindowedJoin(window_ms=HOUR, label_wait_ms=HOUR)
    join.assign({"f/0", "l/0"})
    join.add("f/0", {"id": "a", "ts": 0, "features": {"x": 1.0}})
    join.add("l/0", {"id": "a", "ts": 3 * HOUR, "label": 1.0})
    assert join.late == 1
    join.add("f/0", {"id": "b", "ts": 10, "features": {"x": 1.0}})
    join.add("l/0", {"id": "b", "ts": 2 * HOUR, "label": 0.0})
    join.add("f/0", {"id": "c", "ts": 5 * HOUR, "features": {}})
    join.add("l/0", {"id": "d", "ts": 5 * HOUR, "label": 0.0})
    (batch,) = join.ready()
    assert [s.id for s in batch.samples] == ["b"]


def test_ftrl_rounds_lower_the_loss():
    rng = random.Random(5)
    X = [{"a": float(rng.random() < 0.5), "b": rng.random()} for _ in range(2000)]
    y = [1.0 if x["a"] and rng.random() < 0.8 else 0.0 for x in X]
    one = LogisticRegression(optimizer="ftrl", alpha=0.3, max_rounds=1)
    many = LogisticRegression(optimizer="ftrl", alpha=0.3, max_rounds=30, tol=0.0)
    for _ in range(3):
        one.learn_many(X, y)
        many.learn_many(X, y)
    assert many.learn_many(X, y)[0].loss < one.learn_many(X, y)[0].loss - 0.02
    assert load_model(dump_model(many)).predict_proba_one({"a": 1.0}) == many.predict_proba_one(
        {"a": 1.0}
    )


def test_sgd_rounds_on_a_large_batch_converge_where_plain_sgd_would_diverge():
    rng = random.Random(9)
    X = [
        {"a": float(rng.random() < 0.5), "b": 3 * rng.random(), f"c={rng.randrange(20)}": 1.0}
        for _ in range(5000)
    ]
    y = [1.0 if x["a"] and rng.random() < 0.8 else float(rng.random() < 0.1) for x in X]
    # lr x batch size = 5000: an undamped step on the summed gradient would overshoot wildly.
    model = LogisticRegression(optimizer="sgd", lr=1.0, max_rounds=40, tol=0.0)
    losses = [r.loss for r in model.learn_many(X, y)]
    assert all(b <= a for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0] - 0.15
    # A single sample takes (nearly) the per-sample SGD step: weight and intercept each move by
    # lr x 0.5, so the logit by 0.01 and the probability by 0.0025.
    one = LogisticRegression(optimizer="sgd", lr=0.01, max_rounds=1)
    one.learn_one({"a": 1.0}, 1.0)
    assert one.predict_proba_one({"a": 1.0})[True] - 0.5 == pytest.approx(0.0025, rel=0.02)


def test_features_encoded_once_score_like_the_dicts(records):
    model = LogisticRegression()
    X = [r["features"] for p, r in records if p.startswith("features")][:500]
    model.learn_many(X, [float(i % 2) for i in range(len(X))])
    encoded = model.encode_many(X)
    assert (model.predict_proba_many(encoded) == model.predict_proba_many(X)).all()


def test_the_validation_gate_refuses_a_model_worse_than_its_parent(records):
    from millrace.join import Sample
    from millrace.learners.base import learner_from_state
    from millrace_trainer.training import StreamTrainer

    pairs = {r["id"]: r for _, r in records if "label" in r}
    samples = [
        Sample(r["id"], r["ts"], r["features"], pairs[r["id"]]["label"])
        for _, r in records
        if "features" in r and r["id"] in pairs
    ]
    samples.sort(key=lambda s: (s.ts, s.id))
    base = LogisticRegression(optimizer="sgd", lr=0.01, max_rounds=50)
    base.learn_many([s.features for s in samples[:1000]], [s.label for s in samples[:1000]])

    # A model that went wrong since its parent: trained on the same flights with flipped labels.
    broken = LogisticRegression(optimizer="sgd", lr=0.01, max_rounds=50)
    broken.learn_many([s.features for s in samples[:1000]], [1 - s.label for s in samples[:1000]])

    def trainer(learner: LogisticRegression) -> StreamTrainer:
        t = StreamTrainer(
            learner_from_state(learner.state()), None, "m", "-", gate_margin=0.01, rolling_batches=3
        )
        t.parent_learner = learner_from_state(base.state())
        for start in range(1000, 3000, 100):
            t.learn_batch(samples[start : start + 100])
        return t

    honest, sabotaged = trainer(base), trainer(broken)
    assert honest.gate_passes()
    assert not sabotaged.gate_passes()
    assert sabotaged.lineage.parent_scores.samples == sabotaged.lineage.samples == 2000
    assert len(sabotaged.rolling.window) == 3
    restored = StreamTrainer(LogisticRegression(), None, "m", "-", gate_margin=0.0)
    restored.restore(__import__("orjson").loads(__import__("orjson").dumps(sabotaged.snapshot())))
    assert not restored.gate_passes()
    assert restored.rolling.total().as_dict() == sabotaged.rolling.total().as_dict()


def test_pickle_based_artifacts_load_only_when_signed():
    from river import linear_model

    artifact = dump_model(RiverLearner(linear_model.LogisticRegression()))
    with pytest.raises(ArtifactRejected, match="pickle"):
        load_model(artifact)
    assert load_model(artifact, signed=True).kind == "river"
