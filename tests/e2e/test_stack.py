"""The whole stack, each service its own process, on a real broker and a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from millrace.days import day_start_ms
from millrace.settings import CommonSettings
from millrace_cli.replay import replay
from millrace_flights.events import SCHEDULED, flight_events, load_flights
from tests.e2e.stack import Stack, running_stack
from tests.helpers import read_topic, wait_until

pytestmark = pytest.mark.e2e

MODEL = "flights-delay"
AUTH = {"Authorization": f"Bearer {CommonSettings().token()}"}
MALFORMED = [
    b"{oops",
    b'{"schema": "millrace.event/v1"}',
    b'{"id": 1, "type": [], "key": "", "ts": 1e99, "data": 3}',
]


@pytest.fixture
def stack(kafka_bootstrap: str, redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Stack]:
    trainer = {"MILLRACE_BASELINE_END": "2013-01-03", "MILLRACE_PUBLISH_EVERY": "12"}
    with running_stack(
        tmp_path, kafka_bootstrap, redis_url, prefix, MODEL, {"trainer": trainer}
    ) as s:
        yield s


def test_stream_to_prediction_and_rollback(stack: Stack, kafka_bootstrap: str):
    settings = stack.settings
    assert stack.alias() == 1, "the trainer publishes and promotes the baseline first"

    events = flight_events(load_flights(), day_start_ms("2013-01-03"), day_start_ms("2013-01-06"))
    half = len(events) // 2
    replay(kafka_bootstrap, settings.events_topic, events[:half])
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for raw in MALFORMED:
        producer.produce(settings.events_topic, raw, b"N14228")
    producer.flush(10)
    replay(kafka_bootstrap, settings.events_topic, events[half:])

    scheduled = sum(1 for e in events if e["type"] == SCHEDULED)
    features = read_topic(kafka_bootstrap, settings.features_topic, expect=scheduled, timeout=180)
    assert len(features) == scheduled, (
        "every good event produced features, malformed ones did not stop it"
    )
    dead = read_topic(
        kafka_bootstrap, settings.dead_letter_topic, expect=len(MALFORMED), timeout=60
    )
    assert len(dead) == len(MALFORMED) and all(dict(m.headers())["reason"] for m in dead)
    assert not stack.procs.exited("featurizer")

    wait_until(
        lambda: stack.versions() >= 3, 180, "the trainer to publish versions from the stream"
    )
    # Let the trainer drain what was replayed, so no new version races the rollback below.
    counts = [stack.versions()]

    def settled() -> bool:
        counts.append(stack.versions())
        return len(counts) > 8 and counts[-1] == counts[-8]

    wait_until(settled, 240, "the trainer to finish the replayed batches", interval=1.0)
    production = stack.alias()
    assert production is not None and production >= 2

    flight = next(e for e in events if e["type"] == SCHEDULED)

    def predicted_version() -> int:
        response = stack.predictor.post("/predict", content=orjson.dumps(flight))
        assert response.status_code == 200, response.text
        body = response.json()
        assert 0.0 < body["probability"] < 1.0
        return int(body["version"])

    wait_until(lambda: predicted_version() == production, 30, "the predictor to serve the alias")

    rolled = stack.registry.post(
        f"/models/{MODEL}/rollback", json={"reason": "e2e test"}, headers=AUTH
    )
    assert rolled.status_code == 200, rolled.text
    target = rolled.json()["to_version"]
    assert target == production - 1
    wait_until(lambda: predicted_version() == target, 5, "the predictor to follow the rollback")

    history = stack.registry.get(f"/models/{MODEL}/aliases/production/history").json()["items"]
    assert history[0]["kind"] == "rollback" and history[0]["reason"] == "e2e test"

    bad = stack.predictor.post("/predict", content=b'{"schema": "millrace.event/v1", "id": "x"}')
    assert bad.status_code == 422
