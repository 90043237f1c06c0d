"""The same records, loaded into two fresh sets of topics in different orders, make the trainer
service's loop learn the same number of samples and the same model bytes; each run stops on the
count the join yields over everything the topics hold, read beforehand."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from millrace.artifacts import dump_model
from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.join import Sample, join_all
from millrace.kafka import ensure_topics, pipeline_topics
from millrace.loading import produce_all
from millrace.records import FeatureRecord, LabelRecord
from millrace.registry_client import RegistryClient
from millrace_flights.events import flight_events, load_flights
from millrace_registry.app import create_app
from millrace_registry.settings import RegistrySettings
from millrace_stack.processes import free_port
from millrace_trainer.service import (
    learnable_samples,
    make_checkpoints,
    make_loop,
    make_trainer,
)
from millrace_trainer.settings import TrainerSettings
from tests.helpers import serve, wait_until

pytestmark = pytest.mark.integration
MODULE = "millrace_flights.features:FlightsFeatures"
HOUR = 3_600_000


def load(
    settings: TrainerSettings,
    topics_in_order: list[tuple[str, Sequence[FeatureRecord | LabelRecord], list[bytes]]],
) -> None:
    ensure_topics(settings.kafka_bootstrap, pipeline_topics(settings, settings.partitions))
    produce_all(
        settings.kafka_bootstrap,
        (
            (topic, value, record.key)
            for topic, records, raw in topics_in_order
            for record, value in zip(records, raw, strict=True)
        ),
    )


def train(
    settings: TrainerSettings, client: RegistryClient, base: list[Sample], expected: int
) -> tuple[int, bytes, int]:
    """(samples learned, model bytes, largest checkpoint) of the service's loop."""
    trainer = make_trainer(settings, client, "-")
    trainer.start(None, lambda: base, {"backfill": "test"})
    loop = make_loop(settings, trainer, make_checkpoints(settings))
    thread = threading.Thread(target=loop.run)
    thread.start()
    try:
        wait_until(lambda: trainer.stream_scores.samples >= expected, 120, "the trainer to learn")
        time.sleep(1.5)  # a checkpoint, and anything beyond the expected count, would show now
    finally:
        trainer.stopping.set()
        thread.join(30)
    return trainer.stream_scores.samples, dump_model(trainer.learner), loop.checkpoint_bytes_max


def test_two_freshly_loaded_topic_sets_train_the_same_model(
    kafka_bootstrap: str, prefix: str, tmp_path: Path
) -> None:
    events = flight_events(load_flights(), day_start_ms("2013-01-01"), day_start_ms("2013-01-06"))
    result = backfill(Featurizer(load_feature_module(MODULE)), from_envelopes(events))
    cut = day_start_ms("2013-01-02")
    base = [s for s in join_all(result.features, result.labels) if s.ts < cut]
    stream = [
        [(r, b) for r, b in zip(records, raw, strict=True) if r.ts >= cut]
        for records, raw in (
            (result.features, result.feature_bytes),
            (result.labels, result.label_bytes),
        )
    ]
    registry = RegistrySettings(data_dir=tmp_path, announce=False, kafka_bootstrap=kafka_bootstrap)
    outcomes, counts, fits = [], [], []
    with serve(create_app(registry), free_port()) as url:
        client = RegistryClient.from_settings(registry, signs=True, url=url)
        for run, labels_first in (("a", False), ("b", True)):
            settings = TrainerSettings(
                kafka_bootstrap=kafka_bootstrap,
                topic_prefix=f"{prefix}{run}.",
                model_name=f"model-{run}",
                window_ms=HOUR,
                publish_every=24,
                checkpoint_interval_s=1.0,
            )
            topics = (settings.features_topic, settings.labels_topic)
            parts = [
                (topic, [r for r, _ in rows], [b for _, b in rows])
                for topic, rows in zip(topics, stream, strict=True)
            ]
            load(settings, parts[::-1] if labels_first else parts)
            samples, records = learnable_samples(settings, timeout=60)
            assert records == sum(len(rows) for rows in stream)
            counts.append(samples)
            outcomes.append(train(settings, client, base, counts[-1]))
            fits.append(client.get_version(f"model-{run}", 1)["metadata"]["metrics"])
        client.close()
    (count_a, model_a, checkpoint_a), (count_b, model_b, checkpoint_b) = outcomes
    assert counts[0] == counts[1] > 1000
    assert count_a == count_b == counts[0]
    assert model_a == model_b
    # The baseline carries its own fit, labelled, beside its (untrained) prequential scores.
    fit = fits[0]["baseline_fit"]
    assert fits[0]["baseline_fit"] == fits[1]["baseline_fit"]
    assert fit["what"].startswith("the baseline's fit") and fit["training"]["samples"] == len(base)
    assert fit["training"]["log_loss"] < fits[0]["prequential"]["log_loss"]
    held = fit["held_out"]
    assert held["trained_on"] + held["samples"] == len(base) and held["log_loss"] is not None
    assert 0 < checkpoint_a < 2_000_000 and 0 < checkpoint_b < 2_000_000
