"""The whole stack, each service its own process, on a real broker and a real Redis."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Producer

from millrace.settings import CommonSettings
from millrace_flights.events import SCHEDULED, flight_events, load_flights, to_epoch_ms
from millrace_stack.processes import ProcessTable, free_port
from millrace_stack.replay import replay
from millrace_stack.stack import MODULES
from tests.helpers import read_topic, wait_until

pytestmark = pytest.mark.e2e

MODEL = "flights-delay"
AUTH = {"Authorization": f"Bearer {CommonSettings().token()}"}
MALFORMED = [
    b"{oops",
    b'{"schema": "millrace.event/v1"}',
    b'{"id": 1, "type": [], "key": "", "ts": 1e99, "data": 3}',
]


class Stack:
    def __init__(
        self, procs: ProcessTable, settings: CommonSettings, ports: dict[str, int]
    ) -> None:
        self.procs = procs
        self.settings = settings
        self.ports = ports
        self.registry = httpx.Client(
            base_url=f"http://127.0.0.1:{ports['model-registry']}", timeout=10
        )
        self.predictor = httpx.Client(base_url=f"http://127.0.0.1:{ports['predictor']}", timeout=10)

    def alias(self) -> int | None:
        response = self.registry.get(f"/models/{MODEL}/aliases/production")
        return response.json()["version"] if response.status_code == 200 else None

    def versions(self) -> int:
        return int(self.registry.get(f"/models/{MODEL}/versions").json()["total"])


@pytest.fixture
def stack(kafka_bootstrap: str, redis_url: str, prefix: str, tmp_path: Path) -> Iterator[Stack]:
    procs = ProcessTable(tmp_path)
    ports = {name: free_port() for name in MODULES}
    common = {
        "MILLRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MILLRACE_REDIS_URL": redis_url,
        "MILLRACE_TOPIC_PREFIX": prefix,
        "MILLRACE_REGISTRY_URL": f"http://127.0.0.1:{ports['model-registry']}",
    }
    extra = {
        "model-registry": {"MILLRACE_DATA_DIR": str(tmp_path / "registry")},
        "trainer": {
            "MILLRACE_BASELINE_END": "2013-01-03",
            "MILLRACE_PUBLISH_EVERY": "12",  # an hour of five-minute batches
        },
        "predictor": {"MILLRACE_POLL_INTERVAL_S": "30"},
    }
    modules = MODULES
    s = Stack(
        procs,
        CommonSettings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_prefix=prefix),
        ports,
    )
    try:
        for name, module in modules.items():
            env = {**common, **extra.get(name, {}), "MILLRACE_PORT": str(ports[name])}
            procs.start(name, [sys.executable, "-m", module], env)
            if name == "model-registry":
                wait_until(lambda: _answers(s.registry, "/health"), 60, "the registry")
        for name in ("featurizer", "trainer"):
            wait_until(
                lambda n=name: _answers(
                    httpx.Client(base_url=f"http://127.0.0.1:{ports[n]}"), "/health"
                ),
                180,
                name,
            )
        wait_until(
            lambda: _answers(s.predictor, "/ready"), 120, "the predictor to load the baseline"
        )
        yield s
    finally:
        for name in reversed(modules):
            procs.stop(name)
        for name in modules:
            sys.stderr.write(
                f"--- {name} log (tail) ---\n{procs.log_path(name).read_text()[-3000:]}\n"
            )


def _answers(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def test_stream_to_prediction_and_rollback(stack: Stack, kafka_bootstrap: str):
    settings = stack.settings
    assert stack.alias() == 1, "the trainer publishes and promotes the baseline first"

    events = flight_events(load_flights(), to_epoch_ms("2013-01-03"), to_epoch_ms("2013-01-06"))
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
