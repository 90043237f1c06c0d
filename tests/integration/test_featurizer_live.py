"""The live featurizer on a real broker and a real Redis equals the backfill."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import orjson
import pytest
import redis
from confluent_kafka import Consumer

from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import BackfillResult, Featurizer, backfill, from_envelopes
from millrace.kafka import consumer_config, ensure_topics, pipeline_topics, watermarks
from millrace.loading import OrderedProducer
from millrace.records import FeatureRecord, LabelRecord, encode
from millrace.settings import CommonSettings
from millrace.state import RedisState, StateIncomplete, StateLost
from millrace_cli.replay import replay
from millrace_featurizer.backfill import from_topic
from millrace_featurizer.live import LiveFeaturizer
from millrace_flights.events import flight_events, load_flights
from tests.helpers import featurizer_settings, read_topic, wait_until

pytestmark = pytest.mark.integration

MODULE = "millrace_flights.features:FlightsFeatures"


def canonical(records: Sequence[FeatureRecord | LabelRecord]) -> list[bytes]:
    return sorted(encode(r) for r in records)


def setup_topics(kafka_bootstrap: str, redis_url: str, prefix: str) -> CommonSettings:
    settings = CommonSettings(
        kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_prefix=prefix
    )
    ensure_topics(kafka_bootstrap, pipeline_topics(settings, partitions=3))
    return settings


def expected(start: str, end: str) -> tuple[list[dict], BackfillResult]:
    events = flight_events(load_flights(), day_start_ms(start), day_start_ms(end))
    return events, backfill(Featurizer(load_feature_module(MODULE)), from_envelopes(events))


@contextmanager
def running(
    settings: CommonSettings, replicas: int, batch_size: int = 500
) -> Iterator[list[LiveFeaturizer]]:
    runners = [
        LiveFeaturizer.from_settings(
            featurizer_settings(
                settings, group="featurizer", batch_size=batch_size, instance_id=f"replica-{i}"
            )
        )
        for i in range(replicas)
    ]
    threads = [threading.Thread(target=r.run) for r in runners]
    for t in threads:
        t.start()
    try:
        yield runners
    finally:
        for r in runners:
            r.stopping.set()
        for t in threads:
            t.join(60)


def test_batches_apply_only_on_the_fence_they_expect(redis_url, prefix):
    state = RedisState.from_url(redis_url, prefix)
    assert state.declare_ready([0, 1, 2], total=3) == set()  # this owner's marks
    assert state.apply({0: {"N1": {"a": 2.0, "c": 0.1}}}, {0: 11}, {0: None}) == set()
    # A batch that expects another fence (Redis lost writes, or it was applied already) changes
    # nothing and names its partition.
    assert state.apply({0: {"N1": {"a": 9.0}}}, {0: 12}, {0: None}) == {0}
    assert state.apply({0: {"N1": {"a": 9.0}}}, {0: 12}, {0: 5}) == {0}
    assert state.read("N1") == {"a": 2.0, "c": 0.1}
    # One call for several partitions: each is applied or not on its own fence.
    batch = {0: {"N1": {"a": 7.0}}, 1: {"N1": {"b": 3.0}, "N2": {"b": 1e300}}, 2: {}}
    assert state.apply(batch, {0: 20, 1: 0, 2: 4}, {0: 3, 1: None, 2: None}) == {0}
    assert state.read("N1") == {"a": 2.0, "b": 3.0, "c": 0.1}
    assert state.read("N2") == {"b": 1e300}
    assert state.fences() == {0: 11, 1: 0, 2: 4}


def test_an_owner_that_lost_its_partition_or_its_state_writes_nothing(redis_url, prefix):
    old, new = RedisState.from_url(redis_url, prefix), RedisState.from_url(redis_url, prefix)
    assert old.declare_ready([0, 1], total=2) == set()
    assert old.apply({0: {"N1": {"a": 1.0}}}, {0: 3}, {0: None}) == set()
    # Another replica adopts partition 0 (the marks vouch for it): the old owner, a zombie now,
    # can neither write nor read it, though the fence is the one it expects.
    assert new.adopt([0], total=2) == set()
    assert old.apply({0: {"N1": {"a": 9.0}}}, {0: 4}, {0: 3}) == {0}
    assert old.read("N1") == {"a": 1.0}
    with pytest.raises(StateLost, match=r"partitions \[0\]"):
        old.read_owned({"N1": 0})
    assert old.verify() == {0} and new.verify() == set()
    assert new.read_owned({"N1": 0, "N2": 0}) == {"N1": {"a": 1.0}, "N2": {}}
    # A flush removes every mark: each owner finds out on its next write, read or check.
    new.client.delete(*new.client.keys(f"{prefix}*"))
    assert new.apply({0: {"N1": {"a": 2.0}}}, {0: 4}, {0: 3}) == {0}
    assert new.verify() == {0} and old.verify() == {0, 1}
    assert new.read("N1") == {}
    # And nothing of it can be adopted: it is rebuilt.
    assert new.adopt([0, 1], total=2) == {0, 1}


def test_readers_are_told_when_the_state_is_not_known_complete(redis_url, prefix):
    state = RedisState.from_url(redis_url, prefix)
    with pytest.raises(StateIncomplete, match="not verified"):
        state.read_complete(["N1"])
    state.declare_ready([0, 1], total=3)
    with pytest.raises(StateIncomplete, match=r"partitions \[2\] is being rebuilt"):
        state.read_complete(["N1"])
    state.declare_ready([2], total=3)
    assert state.read_complete(["N1"]) == {"N1": {}} and state.completeness() is None
    state.begin_rebuild([1])
    with pytest.raises(StateIncomplete, match=r"partitions \[1\] is being rebuilt"):
        state.read_complete(["N1"])
    assert state.declare_ready([1], total=3) == set()
    # Marks of another server (before a restart or a failover) do not count.
    (node,) = state.nodes.primaries()
    state.client.hset(state.nodes.marks_key(node), "1", "another-run-id/token")
    assert "not verified on this Redis server" in (state.completeness() or "")


def test_two_live_replicas_equal_the_backfill(kafka_bootstrap, redis_url, prefix):
    settings = setup_topics(kafka_bootstrap, redis_url, prefix)
    events, truth = expected("2013-01-01", "2013-01-06")
    replay(kafka_bootstrap, settings.events_topic, events)
    with running(settings, replicas=2):
        features = read_topic(kafka_bootstrap, settings.features_topic, expect=len(truth.features))
        labels = read_topic(kafka_bootstrap, settings.labels_topic, expect=len(truth.labels))
    assert sorted(m.value() for m in features) == canonical(truth.features)
    assert sorted(m.value() for m in labels) == canonical(truth.labels)
    live_state = RedisState.from_url(redis_url, prefix).read_many(truth.state)
    assert live_state == truth.state
    # The backfill over the topic itself (beginning to the end offsets) agrees as well.
    from_kafka = backfill(
        Featurizer(load_feature_module(MODULE)), from_topic(kafka_bootstrap, settings.events_topic)
    )
    assert canonical(from_kafka.features) == canonical(truth.features)
    assert from_kafka.state == truth.state


def malformed(rng: random.Random, good: dict) -> bytes:
    data = good["data"]
    choices = [
        lambda: b"{not json" + str(rng.random()).encode(),
        lambda: orjson.dumps({**good, "ts": "yesterday"}),
        lambda: orjson.dumps({k: v for k, v in good.items() if k != "data"}),
        lambda: orjson.dumps({**good, "data": {**data, "distance": None}}),
        lambda: orjson.dumps({**good, "data": {**data, "hour": 99}}),
        lambda: orjson.dumps({**good, "data": {**data, "distance": 1.0}}).replace(b":1.0", b":NaN"),
        lambda: orjson.dumps({**good, "data": {**data, "note": "x" * 70_000}}),
        lambda: orjson.dumps({**good, "type": "flight.teleported"}),
        lambda: orjson.dumps([good]),
        lambda: b"",
    ]
    return rng.choice(choices)()


def test_malformed_events_are_dead_lettered_and_good_ones_featurized(
    kafka_bootstrap, redis_url, prefix
):
    settings = setup_topics(kafka_bootstrap, redis_url, prefix)
    events, truth = expected("2013-01-01", "2013-01-04")
    rng = random.Random(13)
    producer = OrderedProducer(kafka_bootstrap)
    bad = 0
    for event in events:
        producer.produce(settings.events_topic, orjson.dumps(event), event["key"])
        if rng.random() < 0.5:
            producer.produce(settings.events_topic, malformed(rng, event), event["key"])
            bad += 1
    producer.flush(30)
    assert bad > 2000
    with running(settings, replicas=1):
        features = read_topic(kafka_bootstrap, settings.features_topic, expect=len(truth.features))
        dead = read_topic(kafka_bootstrap, settings.dead_letter_topic, expect=bad)
    assert sorted(m.value() for m in features) == canonical(truth.features)
    assert len(dead) == bad
    reasons = [dict(m.headers() or [])["reason"].decode() for m in dead]
    assert all(reasons)
    kinds = {dict(m.headers() or [])["kind"].decode() for m in dead}
    assert {
        "malformed_json",
        "invalid_envelope",
        "invalid_data",
        "unknown_type",
        "too_large",
    } <= kinds


def test_state_behind_the_committed_offsets_is_rebuilt_on_assignment(
    kafka_bootstrap, redis_url, prefix
):
    """What a crash between the Kafka commit and the Redis write leaves, taken to the extreme:
    Redis lost every write. On assignment the runner rebuilds it (from the state changelog),
    producing nothing."""
    settings = setup_topics(kafka_bootstrap, redis_url, prefix)
    events, truth = expected("2013-01-01", "2013-01-04")
    replay(kafka_bootstrap, settings.events_topic, events)
    with running(settings, replicas=1):
        read_topic(kafka_bootstrap, settings.features_topic, expect=len(truth.features))
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{prefix}state:*"))
    client.delete(*[k for k in keys if not k.endswith(b"__schema__")])

    probe = Consumer(consumer_config(kafka_bootstrap, f"{prefix}probe"))
    ends = {p: high - 1 for p, (_, high) in watermarks(probe, settings.events_topic).items()}
    probe.close()
    with running(settings, replicas=1):
        state = RedisState.from_url(redis_url, prefix)
        wait_until(lambda: state.fences() == ends, 60, "recovery of the three partitions")
    assert state.read_many(truth.state) == truth.state
    features = read_topic(kafka_bootstrap, settings.features_topic, idle=2.0)
    assert len(features) == len(truth.features), "recovery produces nothing"
