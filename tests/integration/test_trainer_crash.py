"""A trainer SIGKILLed at random points and restarted publishes exactly the versions, byte for
byte, that an uninterrupted trainer publishes from the same baseline and the same offsets: with
the built-in learner, and with a River learner (its state is pickle, restored only from a
checkpoint whose signature verified)."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.kafka import ensure_topics, pipeline_topics
from millrace.loading import produce_all
from millrace.records import encode
from millrace.registry_client import RegistryClient
from millrace.settings import CommonSettings
from millrace_flights.events import flight_events, load_flights
from millrace_registry.app import create_app
from millrace_registry.settings import RegistrySettings
from millrace_stack.processes import ProcessTable, free_port
from tests.helpers import serve, wait_until

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "learner", ["logistic_regression", "river.linear_model.LogisticRegression"]
)
def test_killed_trainer_publishes_the_same_bytes(
    kafka_bootstrap, redis_url, prefix, tmp_path: Path, learner: str
):
    settings = CommonSettings(
        kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_prefix=prefix
    )
    ensure_topics(kafka_bootstrap, pipeline_topics(settings))
    events = flight_events(load_flights(), day_start_ms("2013-01-01"), day_start_ms("2013-01-07"))
    result = backfill(
        Featurizer(load_feature_module("millrace_flights.features:FlightsFeatures")),
        from_envelopes(events),
    )
    stream_from = day_start_ms("2013-01-03")
    produce_all(
        kafka_bootstrap,
        (
            (topic, encode(record), record.key)
            for topic, records in (
                (settings.features_topic, result.features),
                (settings.labels_topic, result.labels),
            )
            for record in records
            if record.ts >= stream_from
        ),
    )

    port = free_port()
    with serve(
        create_app(RegistrySettings(data_dir=tmp_path / "registry", port=port, announce=False)),
        port,
    ) as url:
        client = RegistryClient.from_settings(settings, signs=True, url=url)
        procs = ProcessTable(tmp_path)

        ports: dict[str, int] = {}

        def env(run: str) -> dict[str, str]:
            ports[run] = free_port()
            return {
                "MILLRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
                "MILLRACE_TOPIC_PREFIX": prefix,
                "MILLRACE_REGISTRY_URL": url,
                "MILLRACE_MODEL_NAME": f"model-{run}",
                "MILLRACE_GROUP": f"trainer-{run}",
                "MILLRACE_PORT": str(ports[run]),
                "MILLRACE_BASELINE_END": "2013-01-03",
                "MILLRACE_WINDOW_MS": str(2 * 3_600_000),
                "MILLRACE_PUBLISH_EVERY": "1",
                # Only the rules of the records: versions by the wall clock depend on timing.
                "MILLRACE_PUBLISH_IDLE_S": "null",
                "MILLRACE_PUBLISH_WITHIN_S": "null",
                "MILLRACE_CHECKPOINT_EVERY": "4",
                "MILLRACE_GATE_MARGIN": "0.02",  # the gate and its parent model in checkpoints
                "MILLRACE_PROMOTION": "none",
                "MILLRACE_SESSION_TIMEOUT_MS": "6000",
                "MILLRACE_LEARNER": learner,
                # Polls small enough that checkpoints are written between the kills.
                "MILLRACE_POLL_SIZE": "200",
            }

        def versions(run: str) -> int:
            return int(client.list_versions(f"model-{run}", limit=1)["total"])

        def health(run: str) -> dict[str, Any]:
            """The trainer's /health: it answers once the trainer has started (restored)."""
            try:
                return dict(httpx.get(f"http://127.0.0.1:{ports[run]}/health", timeout=2).json())
            except httpx.HTTPError:
                return {}

        def checkpointed(run: str) -> bool:
            """This run of the trainer has committed a checkpoint since it started."""
            return int(health(run).get("checkpoints", 0)) >= 1

        def settle(run: str) -> int:
            counts = [versions(run)]

            def stable() -> bool:
                counts.append(versions(run))
                return len(counts) >= 10 and counts[-1] > 1 and counts[-1] == counts[-10]

            wait_until(stable, 240, f"trainer {run} to finish", interval=0.5)
            return counts[-1]

        command = [sys.executable, "-m", "millrace_trainer"]
        try:
            procs.start("a", command, env("a"))
            settle("a")
            procs.stop("a")
            total = versions("a")  # stopped: final
            assert total > 20, total

            rng = random.Random(4)
            for fraction in (0.15, 0.45, 0.75):
                procs.start("b", command, env("b"))
                reached: Callable[[], bool] = lambda f=fraction: versions("b") >= int(total * f)  # noqa: E731
                wait_until(reached, 120, "trainer b to make progress", interval=0.05)
                # Killed only once this run has a checkpoint to lose the work after.
                wait_until(lambda: checkpointed("b"), 120, "trainer b to checkpoint", interval=0.05)
                time.sleep(rng.uniform(0.0, 0.3))
                procs.kill("b")
            procs.start("b", command, env("b"))
            # Not stopped before it restored: every restart after a kill is counted below.
            wait_until(lambda: bool(health("b")), 120, "trainer b to start", interval=0.1)
            wait_until(lambda: versions("b") >= total, 240, "trainer b to catch up", interval=0.5)
            # Stopped as a was: whatever b would still publish (a duplicate) is out by now.
            procs.stop("b")
            assert versions("b") == total
            restarts = procs.log_path("b").read_text()
            assert restarts.count("restored checkpoint") == 3, "a restart restored nothing"
        finally:
            for name in ("a", "b"):
                procs.stop(name)
            for name in ("a", "b"):
                if procs.log_path(name).exists():
                    sys.stderr.write(procs.log_path(name).read_text()[-3000:])

        for version in range(1, total + 1):
            assert client.download("model-a", version) == client.download("model-b", version), (
                version
            )
        client.close()
