"""The predictor over real HTTP, with a real registry, Kafka and Redis."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from millrace.artifacts import dump_model
from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.join import join_all
from millrace.kafka import ensure_topics, pipeline_topics
from millrace.learners import LogisticRegression
from millrace.records import encode
from millrace.registry_client import RegistryClient
from millrace.settings import CommonSettings
from millrace.state import RedisState
from millrace_flights.events import SCHEDULED, flight_events, load_flights
from millrace_predictor.app import create_app as predictor_app
from millrace_predictor.settings import PredictorSettings
from millrace_registry.app import create_app as registry_app
from millrace_registry.settings import RegistrySettings
from millrace_stack.processes import free_port
from tests.helpers import serve, wait_until

pytestmark = pytest.mark.integration

MODEL = "flights-delay"
MODULE = "millrace_flights.features:FlightsFeatures"


@dataclass
class Setup:
    registry: RegistryClient
    predict: httpx.Client
    settings: CommonSettings
    events: list[dict]
    labels: dict[str, float]
    replica: Callable[[], AbstractContextManager[httpx.Client]]


@contextmanager
def predictor_replica(registry_url: str, common: dict[str, str]) -> Iterator[httpx.Client]:
    """One predictor replica over real HTTP, answering once it serves a version."""
    predictor = PredictorSettings(
        registry_url=registry_url, poll_interval_s=30, guardrail_min_labels=60, **common
    )
    port = free_port()
    with (
        serve(predictor_app(predictor), port) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        wait_until(lambda: http.get("/ready").status_code == 200, 30, "the predictor")
        yield http


def trained_models(count: int) -> list[bytes]:
    events = flight_events(load_flights(), day_start_ms("2013-01-01"), day_start_ms("2013-01-04"))
    result = backfill(Featurizer(load_feature_module(MODULE)), from_envelopes(events))
    samples = join_all(result.features, result.labels)
    model, artifacts = LogisticRegression(), []
    for i in range(count):
        chunk = samples[i * 300 : (i + 1) * 300]
        model.learn_many([s.features for s in chunk], [s.label for s in chunk])
        artifacts.append(dump_model(model))
    return artifacts


@pytest.fixture
def setup(kafka_bootstrap: str, redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Setup]:
    common = {"kafka_bootstrap": kafka_bootstrap, "redis_url": redis_url, "topic_prefix": prefix}
    settings = CommonSettings(**common)
    ensure_topics(kafka_bootstrap, pipeline_topics(settings))
    # As a featurizer does once it has checked the state of every partition (none here).
    RedisState.from_url(redis_url, prefix).declare_ready(range(3), total=3)
    registry_port = free_port()
    with serve(
        registry_app(RegistrySettings(data_dir=tmp_path, port=registry_port, **common)),
        registry_port,
    ) as registry_url:
        client = RegistryClient.from_settings(settings, signs=True, url=registry_url)
        for artifact in trained_models(4):
            client.publish(MODEL, artifact, {})
        client.move_alias(MODEL, "production", 1, None, "start")
        with predictor_replica(registry_url, common) as http:
            events = flight_events(
                load_flights(), day_start_ms("2013-02-01"), day_start_ms("2013-02-03")
            )
            labels = {
                e["data"]["flight_id"]: float(e["data"]["delayed"])
                for e in events
                if e["type"] != SCHEDULED
            }
            scheduled = [
                e for e in events if e["type"] == SCHEDULED and e["data"]["flight_id"] in labels
            ]
            yield Setup(
                client,
                http,
                settings,
                scheduled,
                labels,
                lambda: predictor_replica(registry_url, common),
            )
        client.close()


def test_state_not_known_complete_is_a_503_with_the_reason(setup: Setup):
    state = RedisState.from_url(setup.settings.redis_url, setup.settings.topic_prefix)
    state.begin_rebuild([1])  # what a featurizer does while it rebuilds partition 1
    event = orjson.dumps(setup.events[0])
    refused = setup.predict.post("/predict", content=event)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "2"
    assert "partitions [1] is being rebuilt" in refused.json()["detail"]
    ready = setup.predict.get("/ready")
    assert ready.status_code == 503 and "being rebuilt" in ready.json()["state"]
    state.declare_ready([1], total=3)
    assert setup.predict.post("/predict", content=event).status_code == 200
    assert setup.predict.get("/ready").status_code == 200


def test_single_batch_and_open_inference_agree(setup: Setup):
    events = setup.events[:50]
    singles = [setup.predict.post("/predict", content=orjson.dumps(e)).json() for e in events]
    batch = setup.predict.post("/predict/batch", json={"events": events}).json()
    assert batch["version"] == 1 and all(s["version"] == 1 for s in singles)
    assert [p["probability"] for p in batch["predictions"]] == [s["probability"] for s in singles]
    infer = setup.predict.post(
        f"/v2/models/{MODEL}/infer",
        json={
            "inputs": [
                {
                    "name": "event",
                    "datatype": "BYTES",
                    "shape": [50],
                    "data": [orjson.dumps(e).decode() for e in events],
                }
            ]
        },
    ).json()
    assert infer["outputs"][0]["data"] == [s["probability"] for s in singles]
    assert infer["model_version"] == "1"
    assert setup.predict.get("/v2/health/ready").json() == {"ready": True}
    assert setup.predict.get(f"/v2/models/{MODEL}").json()["versions"] == ["1"]
    assert setup.predict.get("/v2/models/other").status_code == 404
    bad = [
        setup.predict.post("/predict", content=b"{nope"),
        setup.predict.post("/predict/batch", json={"events": [events[0], {"id": 1}]}),
        setup.predict.post("/predict/batch", json={"events": []}),
        setup.predict.post(
            "/predict", content=orjson.dumps({**events[0], "type": "flight.departed"})
        ),
    ]
    assert [r.status_code for r in bad] == [422, 422, 422, 422]
    assert "event 1" in bad[1].json()["detail"]
    metrics = setup.predict.get("/metrics").text
    assert 'millrace_predictor_requests_total{status="200",version="1"}' in metrics


def test_no_request_fails_while_versions_swap_and_roll_back(setup: Setup):
    """A load generator runs while the alias moves 24 times; every response names a version
    that served production within the request's span (allowing the announcement's delay)."""
    timeline: list[tuple[float, int]] = [(0.0, 1)]
    failures: list[str] = []
    answers: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=str(setup.predict.base_url), timeout=10) as http:
            i = 0
            while not stop.is_set():
                event = setup.events[i % len(setup.events)]
                i += 1
                started = time.monotonic()
                response = http.post("/predict", content=orjson.dumps(event))
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:100]}")
                else:
                    answers.append((started, time.monotonic(), response.json()["version"]))

    workers = [threading.Thread(target=load) for _ in range(3)]
    for w in workers:
        w.start()
    current = 1
    for step in range(24):
        target = None if step % 3 == 2 else {1: 2, 2: 3, 3: 4, 4: 1}[current]
        if target is None:
            moved = setup.registry.rollback(MODEL, reason=f"step {step}")
            target = moved["to_version"]
        else:
            setup.registry.move_alias(MODEL, "production", target, current, f"step {step}")
        timeline.append((time.monotonic(), target))
        current = target
        time.sleep(0.25)
    time.sleep(1.0)
    stop.set()
    for w in workers:
        w.join(30)

    assert not failures, failures[:5]
    assert len(answers) > 200
    allowance = 2.0  # the predictor learns of a move through the model-events topic

    def served_during(start: float, end: float) -> set[int]:
        versions = {v for t, v in timeline if start - allowance <= t <= end}
        before = [v for t, v in timeline if t < start - allowance]
        return versions | ({before[-1]} if before else set())

    wrong = [(s, e, v) for s, e, v in answers if v not in served_during(s, e)]
    assert not wrong, wrong[:5]


def publish_labels(setup: Setup, events: list[dict]) -> None:
    producer = Producer({"bootstrap.servers": setup.settings.kafka_bootstrap})
    for event in events:
        subject = event["data"]["flight_id"]
        label = {
            "schema": "millrace.label/v1",
            "id": subject,
            "key": event["key"],
            "ts": event["ts"],
            "event_id": subject,
            "label": setup.labels[subject],
        }
        producer.produce(setup.settings.labels_topic, encode(label), event["key"].encode())
    producer.flush(10)


def test_two_replicas_follow_the_alias_and_roll_back_once(setup: Setup):
    broken = LogisticRegression()
    broken.bias = 12.0
    setup.registry.publish(MODEL, dump_model(broken), {})
    with setup.replica() as other:
        replicas = [setup.predict, other]
        setup.registry.move_alias(MODEL, "production", 5, 1, "ship the broken one")

        def serving(version: int) -> bool:
            return all(r.get("/ready").json()["version"] == version for r in replicas)

        wait_until(lambda: serving(5), 10, "both replicas to serve version 5")
        events = setup.events[:200]
        for i, event in enumerate(events):  # the requests alternate between the replicas
            answer = replicas[i % 2].post("/predict", content=orjson.dumps(event))
            assert answer.status_code == 200 and answer.json()["version"] == 5
        publish_labels(setup, events)
        wait_until(lambda: setup.registry.get_alias(MODEL) == 1, 30, "the guardrail's rollback")
        wait_until(lambda: serving(1), 10, "both replicas to serve version 1 again")
        time.sleep(3)  # both replicas' guardrails have had every label by now
    history = setup.registry._request("GET", f"/models/{MODEL}/aliases/production/history").json()[
        "items"
    ]
    rollbacks = [h for h in history if h["reason"].startswith("guardrail")]
    assert [(h["from_version"], h["to_version"]) for h in rollbacks] == [(5, 1)]
    assert setup.registry.get_alias(MODEL) == 1


def test_guardrail_rolls_back_a_broken_version(setup: Setup):
    broken = LogisticRegression()
    broken.bias = 12.0  # says "late" for everything
    setup.registry.publish(MODEL, dump_model(broken), {"tags": {"note": "broken on purpose"}})
    setup.registry.move_alias(MODEL, "production", 5, 1, "ship the broken one")
    wait_until(lambda: setup.predict.get("/ready").json()["version"] == 5, 10, "version 5 to serve")

    answered = [
        setup.predict.post("/predict", content=orjson.dumps(e)).json() for e in setup.events[:150]
    ]
    assert {a["version"] for a in answered} == {5}
    publish_labels(setup, setup.events[:150])

    wait_until(lambda: setup.registry.get_alias(MODEL) == 1, 30, "the guardrail's rollback")
    history = setup.registry._request("GET", f"/models/{MODEL}/aliases/production/history").json()[
        "items"
    ]
    assert history[0]["from_version"] == 5 and history[0]["to_version"] == 1
    assert history[0]["reason"].startswith("guardrail: version 5 log-loss")
    wait_until(
        lambda: setup.predict.get("/ready").json()["version"] == 1, 10, "version 1 to serve again"
    )


def test_bad_input_never_gets_a_server_error(setup: Setup):
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
    template = setup.events[0]
    mutated = st.builds(
        lambda where, field, value: (
            {**template, field: value}
            if where == "envelope"
            else {**template, "data": {**template["data"], field: value}}
        ),
        st.sampled_from(["envelope", "data"]),
        st.sampled_from([*template, *template["data"], "extra"]),
        json_values,
    )
    bodies = st.one_of(
        mutated.map(lambda v: json.dumps(v, allow_nan=True).encode()),
        json_values.map(lambda v: json.dumps(v, allow_nan=True).encode()),
        st.binary(max_size=300),
    )

    @given(body=bodies, target=st.sampled_from(["single", "batch", "infer"]))
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    def check(body: bytes, target: str) -> None:
        if target == "single":
            response = setup.predict.post("/predict", content=body)
        elif target == "batch":
            response = setup.predict.post("/predict/batch", content=b'{"events": [' + body + b"]}")
        else:
            payload = {
                "inputs": [
                    {
                        "name": "event",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": [body.decode("latin-1")],
                    }
                ]
            }
            response = setup.predict.post(f"/v2/models/{MODEL}/infer", json=payload)
        assert response.status_code < 500, (target, body[:200], response.text[:200])

    check()


def test_an_event_the_module_fails_on_is_a_422_with_the_reason(setup: Setup):
    from tests.integration.test_featurizer_hardening import FRAGILE

    common = {
        "kafka_bootstrap": setup.settings.kafka_bootstrap,
        "redis_url": setup.settings.redis_url,
        "topic_prefix": setup.settings.topic_prefix,
        "feature_module": FRAGILE,
    }
    scheduled = next(e for e in setup.events if e["type"] == "flight.scheduled")
    crashing = {**scheduled, "data": {**scheduled["data"], "flight": 0}}  # the module's bug
    with predictor_replica(str(setup.registry._http.base_url), common) as fragile:
        assert fragile.post("/predict", json=scheduled).status_code == 200
        response = fragile.post("/predict", json=crashing)
        assert response.status_code == 422, response.text
        assert "feature module failed: ZeroDivisionError" in response.json()["detail"]
        batch = fragile.post("/predict/batch", json={"events": [scheduled, crashing]})
        assert batch.status_code == 422
        assert batch.json()["detail"].startswith("event 1: feature module failed")


def test_a_version_that_fails_verification_keeps_the_current_one(setup: Setup, tmp_path: Path):
    sha = setup.registry.get_version(MODEL, 4)["sha256"]
    artifact = next((tmp_path / "artifacts").rglob(sha))
    artifact.write_bytes(artifact.read_bytes().replace(b'"bias":', b'"bias": '))
    setup.registry.move_alias(MODEL, "production", 4, 1, "a corrupted artifact")

    def failed_loads() -> float:
        metrics = setup.predict.get("/metrics").text
        failed = re.search(r"^millrace_predictor_failed_loads_total ([0-9.]+)$", metrics, re.M)
        return float(failed.group(1)) if failed is not None else 0.0

    # Until the predictor has tried version 4 (and failed), however slow the machine.
    wait_until(lambda: failed_loads() >= 1, 30, "the predictor to try version 4")
    assert setup.predict.get("/ready").json()["version"] == 1
    answer = setup.predict.post("/predict", content=orjson.dumps(setup.events[0]))
    assert answer.status_code == 200 and answer.json()["version"] == 1
    assert failed_loads() >= 1


def test_a_version_trained_on_other_features_is_refused(setup: Setup):
    """A model is bound to the feature code it learned from: trained on another module's
    features, it would get inputs it never saw, silently."""
    elsewhere = {"lineage": {"feature_schema": "0123456789abcdef"}}
    version = setup.registry.publish(MODEL, trained_models(1)[0], elsewhere)["version"]
    setup.registry.move_alias(MODEL, "production", version, 1, "another module's model")
    wait_until(
        lambda: str(version) in setup.predict.get("/ready").json()["refused"],
        10,
        "the predictor to refuse the version",
    )
    ready = setup.predict.get("/ready").json()
    assert ready["version"] == 1
    assert "trained on feature schema 0123456789abcdef" in ready["refused"][str(version)]
    answer = setup.predict.post("/predict", content=orjson.dumps(setup.events[0]))
    assert answer.status_code == 200 and answer.json()["version"] == 1
    metrics = setup.predict.get("/metrics").text
    refused = re.search(r"^millrace_predictor_refused_versions_total ([0-9.]+)$", metrics, re.M)
    assert refused is not None and float(refused.group(1)) >= 1
    # The versions trained on this module's features still serve.
    setup.registry.move_alias(MODEL, "production", 2, version, "back to our features")
    wait_until(lambda: setup.predict.get("/ready").json()["version"] == 2, 10, "version 2")
