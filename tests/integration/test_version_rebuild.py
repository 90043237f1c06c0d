"""Every stream version is rebuilt, bit for bit, from its parent and the records its lineage
names: for a replay loaded before the trainer starts (polls of thousands of records, spanning
many versions) and for a slow one trickled in while it runs (small polls, checkpoints between
versions); and a stream that goes quiet has what was learned in a published version within the
idle time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import BackfillResult, Featurizer, backfill, from_envelopes
from millrace.join import Sample, join_all
from millrace.kafka import ensure_topics, pipeline_topics
from millrace.loading import OrderedProducer
from millrace.registry_client import RegistryClient
from millrace_cli.app import app
from millrace_flights.events import flight_events, load_flights
from millrace_registry.app import create_app
from millrace_registry.settings import RegistrySettings
from millrace_stack.processes import free_port
from millrace_trainer.rebuild import published_samples, rebuild_version, stream_versions
from millrace_trainer.service import learnable_samples, make_checkpoints, make_loop, make_trainer
from millrace_trainer.settings import TrainerSettings
from tests.helpers import serve, wait_until

pytestmark = pytest.mark.integration
MODULE = "millrace_flights.features:FlightsFeatures"
HOUR = 3_600_000
IDLE_S = 2.0


@pytest.fixture(scope="module")
def flights() -> tuple[list[Sample], list[tuple[int, str, bytes, str]]]:
    """The baseline (January 1st) and the stream (six days after it) as (time, topic kind,
    bytes, key) in event-time order, as the featurizer writes them."""
    events = flight_events(load_flights(), day_start_ms("2013-01-01"), day_start_ms("2013-01-08"))
    result: BackfillResult = backfill(
        Featurizer(load_feature_module(MODULE)), from_envelopes(events)
    )
    cut = day_start_ms("2013-01-02")
    base = [s for s in join_all(result.features, result.labels) if s.ts < cut]
    stream = [
        (r.ts, kind, raw, r.key)
        for kind, records, raws in (
            ("features", result.features, result.feature_bytes),
            ("labels", result.labels, result.label_bytes),
        )
        for r, raw in zip(records, raws, strict=True)
        if r.ts >= cut
    ]
    stream.sort(key=lambda row: row[0])
    return base, stream


@pytest.fixture
def registry(tmp_path: Path, kafka_bootstrap: str) -> Iterator[tuple[RegistryClient, str]]:
    settings = RegistrySettings(data_dir=tmp_path, announce=False, kafka_bootstrap=kafka_bootstrap)
    with serve(create_app(settings), free_port()) as url:
        client = RegistryClient.from_settings(settings, signs=True, url=url)
        yield client, url
        client.close()


def produce(
    settings: TrainerSettings, rows: list[tuple[int, str, bytes, str]], pause: float
) -> None:
    """The rows into the settings' topics; ``pause`` seconds after every 100 (a slow stream)."""
    producer = OrderedProducer(settings.kafka_bootstrap, **{"linger.ms": 5})
    topics = {"features": settings.features_topic, "labels": settings.labels_topic}
    for i, (_, kind, raw, key) in enumerate(rows):
        producer.produce(topics[kind], raw, key)
        if pause and i % 100 == 99:
            producer.flush(30)
            time.sleep(pause)
    producer.flush(30)


def run_trainer(
    settings: TrainerSettings,
    client: RegistryClient,
    base: list[Sample],
    rows: list[tuple[int, str, bytes, str]],
    pause: float,
) -> dict[str, Any]:
    """Train over ``rows`` (produced before the trainer starts without ``pause``, while it
    runs with one) until the stream's learned samples are all in published versions."""
    ensure_topics(settings.kafka_bootstrap, pipeline_topics(settings, settings.partitions))
    if not pause:
        produce(settings, rows, 0)
    trainer = make_trainer(settings, client, "-")
    trainer.start(None, lambda: base, {"backfill": "January 1st"})
    loop = make_loop(settings, trainer, make_checkpoints(settings))
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        if pause:
            produce(settings, rows, pause)
        expected, _ = learnable_samples(settings, timeout=60)
        wait_until(
            lambda: trainer.stream_scores.samples >= expected or not thread.is_alive(),
            120,
            "the trainer to learn",
        )
        assert trainer.stream_scores.samples == expected, (trainer.stream_scores.samples, expected)
        learned_at = time.monotonic()
        wait_until(
            lambda: published_samples(client, settings.model_name) >= expected,
            30,
            "the quiet stream's tail to be published",
            interval=0.1,
        )
        tail_s = time.monotonic() - learned_at
    finally:
        trainer.stopping.set()
        thread.join(30)
    assert trainer.stream_scores.samples == expected
    return {"expected": expected, "tail_published_within_s": tail_s}


def test_every_version_of_a_fast_and_a_slow_replay_rebuilds_bit_for_bit(
    kafka_bootstrap: str, prefix: str, flights: Any, registry: Any
) -> None:
    base, rows = flights
    client, url = registry
    for run, pause, poll_size in (("fast", 0.0, 10_000), ("slow", 0.02, 50)):
        settings = TrainerSettings(
            kafka_bootstrap=kafka_bootstrap,
            topic_prefix=f"{prefix}{run}.",
            model_name=f"model-{run}",
            window_ms=HOUR,
            label_wait_ms=6 * HOUR,
            publish_every=2,
            publish_idle_s=IDLE_S,
            poll_size=poll_size,
            checkpoint_interval_s=0.5,
        )
        figures = run_trainer(settings, client, base, rows, pause)
        # What was learned reached a published version soon after the stream went quiet.
        assert figures["tail_published_within_s"] < IDLE_S + 5, figures
        versions = stream_versions(client, settings.model_name)
        assert len(versions) >= 50, len(versions)
        rebuilt = [
            rebuild_version(client, kafka_bootstrap, settings.model_name, v) for v in versions
        ]
        assert [r.version for r in rebuilt if not r.identical] == []
        assert sum(r.samples for r in rebuilt) == figures["expected"]
        reasons = {r.published_because for r in rebuilt}
        assert reasons <= {"publish_every", "publish_idle_s"} and "publish_every" in reasons
        newest = client.get_version(settings.model_name, versions[-1])["metadata"]["lineage"]
        assert newest["published_because"] == "publish_idle_s", newest

    # The command a user runs: the slow replay's versions from a terminal, and a baseline said.
    env = {"MILLRACE_REGISTRY_URL": url, "MILLRACE_KAFKA_BOOTSTRAP": kafka_bootstrap}
    result = rebuild_command(["--all"], env)
    assert result.exit_code == 0, result.output
    assert f"{len(versions)} of {len(versions)} versions rebuilt identical" in result.output
    result = rebuild_command(["1"], env)
    assert result.exit_code == 1 and "is a baseline" in result.output, result.output


def rebuild_command(versions: list[str], env: dict[str, str]) -> Result:
    """``millrace models rebuild VERSIONS --model model-slow``, in a wide terminal."""
    command = ["models", "rebuild", *versions, "--model", "model-slow"]
    return CliRunner().invoke(app, command, env={**env, "COLUMNS": "200"})
