"""The live featurizer on a real broker and a real Redis equals the backfill."""

from __future__ import annotations

import threading

import orjson
import pytest
import redis
from millrace.backfill import backfill
from millrace.features import load_feature_module
from millrace.featurize import Featurizer
from millrace.flights import flight_events, load_flights, to_epoch_ms
from millrace.kafka import ensure_topics, pipeline_topics
from millrace.live import LiveFeaturizer
from millrace.replay import replay
from millrace.settings import CommonSettings
from millrace.state import RedisState, StateWrite

from tests.helpers import read_topic

pytestmark = pytest.mark.integration

MODULE = "millrace.features.flights:FlightsFeatures"
ENVELOPE = b'{"schema": "millrace.event/v1", "id": "x", "key": "N1", '
BAD_EVENTS = [
    b"{not json",
    ENVELOPE + b'"type": "flight.scheduled", "ts": -5, "data": {}}',
    ENVELOPE + b'"type": "flight.landed", "ts": 5, "data": {}}',
    ENVELOPE + b'"type": "flight.scheduled", "ts": 5, "data": {"distance": "far"}}',
    b"",
]


def test_fenced_state_writes_apply_once(redis_url, prefix):
    state = RedisState.from_url(redis_url, prefix)
    assert (
        state.write_many([StateWrite("N1", {"a": 1.0}, 0, 10), StateWrite("N1", {"a": 2.0}, 0, 11)])
        == 2
    )
    # A replay of offsets 10 and 11 after a crash changes nothing.
    assert (
        state.write_many([StateWrite("N1", {"a": 1.0}, 0, 10), StateWrite("N1", {"a": 2.0}, 0, 11)])
        == 0
    )
    assert state.read("N1") == {"a": 2.0}
    assert state.write_many([StateWrite("N1", {"a": 3.0}, 1, 0)]) == 1


def test_live_runner_matches_backfill_and_dead_letters_bad_events(
    kafka_bootstrap, redis_url, prefix
):
    settings = CommonSettings(
        kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_prefix=prefix
    )
    ensure_topics(kafka_bootstrap, pipeline_topics(settings, partitions=3))
    events = flight_events(load_flights(), to_epoch_ms("2013-01-01"), to_epoch_ms("2013-01-04"))
    expected = backfill(Featurizer(load_feature_module(MODULE)), events)

    replay(kafka_bootstrap, settings.events_topic, events)
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for raw in BAD_EVENTS:
        producer.produce(settings.events_topic, raw, b"N1")
    producer.flush(10)

    runner = LiveFeaturizer(
        Featurizer(load_feature_module(MODULE)),
        RedisState.from_url(redis_url, prefix),
        kafka_bootstrap,
        group=f"{prefix}featurizer",
        events_topic=settings.events_topic,
        features_topic=settings.features_topic,
        labels_topic=settings.labels_topic,
        dead_letter_topic=settings.dead_letter_topic,
        batch_size=500,
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        features = read_topic(
            kafka_bootstrap, settings.features_topic, expect=len(expected.features)
        )
        labels = read_topic(kafka_bootstrap, settings.labels_topic, expect=len(expected.labels))
        dead = read_topic(kafka_bootstrap, settings.dead_letter_topic, expect=len(BAD_EVENTS))
    finally:
        runner.stopping.set()
        thread.join(30)

    assert sorted(m.value() for m in features) == sorted(
        orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in expected.features
    )
    assert len(labels) == len(expected.labels)
    assert len(dead) == len(BAD_EVENTS)
    assert all(dict(m.headers())["reason"] for m in dead)

    client = redis.Redis.from_url(redis_url)
    state = RedisState(client, prefix)
    live_state = state.read_many(expected.state)
    assert live_state == expected.state
