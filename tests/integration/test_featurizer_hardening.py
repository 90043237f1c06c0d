"""Poison pills and fencing: one bad event never stops the featurizer, a fenced replica ends."""

from __future__ import annotations

import threading

import orjson
import pytest
from confluent_kafka import Producer

from millrace.envelope import Event
from millrace.features.api import State
from millrace.health import ServiceFailed
from millrace_cli.replay import replay
from millrace_featurizer.live import MAX_DEAD_LETTER_BYTES, LiveFeaturizer
from millrace_flights.features import FlightsFeatures
from tests.helpers import featurizer_settings, read_topic, wait_until
from tests.integration.test_featurizer_live import canonical, expected, running, setup_topics

pytestmark = pytest.mark.integration

FRAGILE = "tests.integration.test_featurizer_hardening:FragileFlights"


class FragileFlights(FlightsFeatures):
    """The flights module with a bug a schema cannot catch: flight number 0 divides by zero."""

    def features(self, event: Event, state: State) -> dict[str, float] | None:
        if event.type == "flight.scheduled":
            _ = 1.0 / event.data.flight
        return super().features(event, state)


def test_oversized_crashing_and_keyless_events_are_dead_lettered_and_the_rest_flows(
    kafka_bootstrap, redis_url, prefix
):
    settings = setup_topics(kafka_bootstrap, redis_url, prefix)
    settings.feature_module = FRAGILE
    events, truth = expected("2013-01-01", "2013-01-03")
    good = next(e for e in events if e["type"] == "flight.scheduled")
    assert all(e["data"]["flight"] != 0 for e in events)
    # Valid JSON just under the producer's 1,000,000-byte limit: its whole copy plus headers
    # would not fit in a dead letter.
    huge = orjson.dumps({**good, "data": {**good["data"], "note": "x" * 990_000}})
    # Schema-valid, but the module's code raises on it.
    crashing = orjson.dumps({**good, "data": {**good["data"], "flight": 0}})
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(settings.events_topic, huge, good["key"])
    producer.produce(settings.events_topic, crashing, good["key"])
    producer.produce(settings.events_topic, orjson.dumps(good), None)
    producer.flush(30)
    replay(kafka_bootstrap, settings.events_topic, events)

    with running(settings, replicas=1):
        features = read_topic(kafka_bootstrap, settings.features_topic, expect=len(truth.features))
        dead = read_topic(kafka_bootstrap, settings.dead_letter_topic, expect=3)

    assert sorted(m.value() for m in features) == canonical(truth.features)
    by_kind = {dict(m.headers() or [])["kind"].decode(): m for m in dead}
    assert set(by_kind) == {"too_large", "module_error", "missing_key"}
    oversized = by_kind["too_large"]
    assert len(oversized.value() or b"") == MAX_DEAD_LETTER_BYTES
    assert dict(oversized.headers() or [])["truncated_from"] == str(len(huge)).encode()
    reason = dict(by_kind["module_error"].headers() or [])["reason"].decode()
    assert reason.startswith("feature module failed:"), reason


def test_a_fenced_replica_reports_failure_and_stops(kafka_bootstrap, redis_url, prefix):
    """Two processes with one instance id: the newer fences the older, whose next transaction
    fails fatally; it must not spin on while its health says ok."""
    settings = setup_topics(kafka_bootstrap, redis_url, prefix)
    events, _ = expected("2013-01-01", "2013-01-03")
    half = len(events) // 2
    replay(kafka_bootstrap, settings.events_topic, events[:half])
    old = LiveFeaturizer.from_settings(
        featurizer_settings(settings, group="featurizer", batch_size=200, instance_id="same")
    )
    failure: list[BaseException] = []

    def run_old() -> None:
        try:
            old.run()
        except ServiceFailed as exc:
            failure.append(exc)

    thread = threading.Thread(target=run_old)
    thread.start()
    try:
        wait_until(lambda: old.batches > 0, 60, "the first replica's first batch")
        new = LiveFeaturizer.from_settings(
            featurizer_settings(settings, group="featurizer", batch_size=200, instance_id="same")
        )
        new.producer.init_transactions(30)  # what a restarted replica does first: it fences
        new.consumer.close()
        replay(kafka_bootstrap, settings.events_topic, events[half:])
        thread.join(60)
        assert not thread.is_alive(), "the fenced replica kept running"
        assert failure, "the fenced replica ended without reporting a failure"
        assert "fatal" in str(failure[0])
        assert old.health()["status"] == "failed"
    finally:
        old.stopping.set()
        thread.join(30)
