"""The loops the trainer is measured against, over the same pre-loaded topics
(``bench_trainer.py`` runs them; ``profile_trainer.py`` uses the bare consume):

- a bare consume of the two topics, decoding nothing (the limit for any consumer), at
  librdkafka's default fetch size and at the trainer's (``fetch_partition_bytes``);
- the script a user writes instead: one consumer, orjson, a dict join, River's
  ``predict_proba_one`` + ``learn_one`` (it learns in consumption order, not event time), at
  librdkafka's defaults as a user writes it, and at the trainer's fetch size.

(The least loops an earlier round measured here, Python and compiled, decided the trainer's
design and are in docs/performance.md; the trainer now is the compiled design.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer
from river import linear_model

from millrace.evaluation import log_loss
from millrace.featurize import BackfillResult
from millrace.join import Sample
from millrace.kafka import consumer_config, ensure_topics, pipeline_topics
from millrace.learners import Classifier
from millrace.loading import produce_all
from millrace_trainer.service import fetch_config
from millrace_trainer.settings import TrainerSettings


def baseline_model(settings: TrainerSettings, base: list[Sample]) -> Classifier:
    model = settings.build_learner()
    model.learn_many(
        [s.features for s in base], [s.label for s in base], max_rounds=settings.baseline_rounds
    )
    return model


def load_topics(bootstrap: str, result: BackfillResult, cut: int) -> TrainerSettings:
    """A fresh set of topics holding the stream's feature and label records, keyed by entity."""
    settings = TrainerSettings(kafka_bootstrap=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
    ensure_topics(bootstrap, pipeline_topics(settings, settings.partitions))
    # In order: a reordered partition would make on-time samples late (millrace.loading).
    produce_all(
        bootstrap,
        (
            (topic, value, r.key)
            for topic, records, raw in (
                (settings.features_topic, result.features, result.feature_bytes),
                (settings.labels_topic, result.labels, result.label_bytes),
            )
            for r, value in zip(records, raw, strict=True)
            if r.ts >= cut
        ),
    )
    return settings


def read_all(
    settings: TrainerSettings,
    on_batch: Callable[[list[Any]], None],
    fetch_partition_bytes: int | None = None,
) -> tuple[int, float]:
    """Hand every record of the two topics to ``on_batch``, fetching librdkafka's default or
    ``fetch_partition_bytes`` per partition; returns how many were read and when
    (``perf_counter``) the last batch of records was handled."""
    fetch = fetch_config(fetch_partition_bytes) if fetch_partition_bytes else {}
    consumer = Consumer(
        consumer_config(
            settings.kafka_bootstrap,
            f"bench-{uuid.uuid4().hex}",
            **{"enable.partition.eof": True, **fetch},
        )
    )
    consumer.subscribe([settings.features_topic, settings.labels_topic])
    at_end: set[tuple[str, int]] = set()
    done, last = 0, 0.0
    try:
        while True:
            messages = consumer.consume(10_000, timeout=1.0)
            batch = []
            for m in messages:  # in order: an end-of-partition event follows its last record
                partition = (str(m.topic()), m.partition() or 0)
                if m.error() is None:
                    batch.append(m)
                    at_end.discard(partition)
                else:
                    at_end.add(partition)
            if batch:
                on_batch(batch)
                done += len(batch)
                last = time.perf_counter()
            elif len(at_end) == 2 * settings.partitions:
                return done, last
    finally:
        consumer.close()


def bare_consume(settings: TrainerSettings, fetch_partition_bytes: int | None = None) -> float:
    """Samples/s of a loop that only consumes the two topics (two records make a sample)."""
    done, first, started = 0, 0, 0.0

    def count(batch: list[Any]) -> None:
        nonlocal done, first, started
        for m in batch:
            m.value()
        done += len(batch)
        if batch and not first:  # the clock starts after the group join and the first batch
            first, started = done, time.perf_counter()

    _, last = read_all(settings, count, fetch_partition_bytes)
    return (done - first) / 2 / (last - started)


def river_kafka_peer(
    settings: TrainerSettings, fetch_partition_bytes: int | None = None
) -> dict[str, float]:
    """What a user writes instead: one consumer, orjson, a dict join, River learn_one."""
    model = linear_model.LogisticRegression()
    features: dict[str, dict[str, float]] = {}
    labels: dict[str, float] = {}
    p_seen: list[float] = []
    y_seen: list[float] = []
    first, started = 0, 0.0

    def learn(x: dict[str, float], y: float) -> None:
        p_seen.append(model.predict_proba_one(x).get(True, 0.0))
        y_seen.append(y)
        model.learn_one(x, bool(y))

    def on_batch(batch: list[Any]) -> None:
        nonlocal first, started
        for m in batch:
            record = orjson.loads(m.value())
            if m.topic() == settings.features_topic:
                label = labels.pop(record["id"], None)
                if label is None:
                    features[record["id"]] = record["features"]
                else:
                    learn(record["features"], label)
            else:
                x = features.pop(record["id"], None)
                if x is None:
                    labels[record["id"]] = record["label"]
                else:
                    learn(x, record["label"])
        if batch and not started:
            first, started = len(p_seen), time.perf_counter()

    _, last = read_all(settings, on_batch, fetch_partition_bytes)
    elapsed = last - started
    return {
        "rate": (len(p_seen) - first) / elapsed,
        "log_loss": log_loss(np.array(y_seen), np.array(p_seen)),
        "samples": len(p_seen),
    }
