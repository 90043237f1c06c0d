"""The loops the trainer is measured against, over the same pre-loaded topics
(``bench_trainer.py`` runs them; ``profile_trainer.py`` uses the bare consume):

- a bare consume of the two topics, decoding nothing (the limit for any consumer);
- the script a user writes instead: one consumer, orjson, a dict join, River's
  ``predict_proba_one`` + ``learn_one`` (it learns in consumption order, not event time);
- the least loop in Python that learns with Millrace's learner: that script with msgspec's typed
  decoding, and each poll's pairs scored and learned in one compiled call instead of River's
  per-sample calls. Nothing a trainer must add (event-time windows, their order, lineage,
  checkpoints, versions): the most a trainer whose per-record path is Python can reach. Run
  over the feature records as they are (a dict of names) and over the same records carrying
  each name's CRC-32 beside its value as two arrays instead (``TypedFeatures``: a design for a
  version 2 record, measured here before it is built), and with the decode and the pairing
  compiled (``compiled_pairing/``, a Rust extension ``make bench`` builds): the design of a
  compiled per-record path, measured in its least form.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Callable
from itertools import chain
from typing import Any

import msgspec
import numpy as np
import orjson
from confluent_kafka import Consumer
from river import linear_model

from millrace.evaluation import log_loss
from millrace.featurize import BackfillResult
from millrace.join import Sample
from millrace.kafka import consumer_config, ensure_topics, pipeline_topics
from millrace.learners import Classifier
from millrace.learners.logreg import LogisticRegression, SparseRows
from millrace.loading import produce_all
from millrace.records import FeatureRecord, decode_features, decode_label
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


#: librdkafka settings the loops here read with, beyond the project's consumer defaults
#: (``bench_trainer.py --loops-fetch-bytes``: larger fetches, the ceiling of the fetch path).
LOOP_CONSUMER: dict[str, Any] = {}


def read_all(settings: TrainerSettings, on_batch: Callable[[list[Any]], None]) -> tuple[int, float]:
    """Hand every record of the two topics to ``on_batch``; returns how many were read and
    when (``perf_counter``) the last batch of records was handled."""
    consumer = Consumer(
        consumer_config(
            settings.kafka_bootstrap,
            f"bench-{uuid.uuid4().hex}",
            **{"enable.partition.eof": True, **LOOP_CONSUMER},
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


def bare_consume(settings: TrainerSettings) -> float:
    """Samples/s of a loop that only consumes the two topics (two records make a sample)."""
    done, first, started = 0, 0, 0.0

    def count(batch: list[Any]) -> None:
        nonlocal done, first, started
        for m in batch:
            m.value()
        done += len(batch)
        if batch and not first:  # the clock starts after the group join and the first batch
            first, started = done, time.perf_counter()

    _, last = read_all(settings, count)
    return (done - first) / 2 / (last - started)


def river_kafka_peer(settings: TrainerSettings) -> dict[str, float]:
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

    _, last = read_all(settings, on_batch)
    elapsed = last - started
    return {
        "rate": (len(p_seen) - first) / elapsed,
        "log_loss": log_loss(np.array(y_seen), np.array(p_seen)),
        "samples": len(p_seen),
    }


class TypedFeatures(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """A feature record whose features are two arrays: each name's CRC-32 (what the learner
    hashes a name to, before masking it to its own space) and its value."""

    id: str
    key: str
    ts: int
    hashes: list[int]
    values: list[float]
    event_id: str = ""
    feature_schema: str = ""
    schema: str = "millrace.features/v2-candidate"


_encode_typed = msgspec.json.Encoder(order="sorted").encode
_decode_typed = msgspec.json.Decoder(TypedFeatures).decode


def typed_feature_bytes(records: list[FeatureRecord]) -> list[bytes]:
    """``records`` as :class:`TypedFeatures` (the same samples, the same hashed weights)."""
    crc: dict[str, int] = {}
    encoded = []
    for r in records:
        hashes = [crc.get(n) or crc.setdefault(n, zlib.crc32(n.encode())) for n in r.features]
        encoded.append(
            _encode_typed(
                TypedFeatures(
                    r.id,
                    r.key,
                    r.ts,
                    hashes,
                    list(r.features.values()),
                    r.event_id,
                    r.feature_schema,
                )
            )
        )
    return encoded


def _typed_rows(model: LogisticRegression, records: list[TypedFeatures]) -> SparseRows:
    n = len(records)
    lengths = np.fromiter((len(r.hashes) for r in records), np.int64, n)
    count = int(lengths.sum())
    mask = (1 << model.dim_log2) - 1
    cols = np.fromiter(chain.from_iterable(r.hashes for r in records), np.int64, count) & mask
    values = np.fromiter(chain.from_iterable(r.values for r in records), float, count)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return SparseRows(n, np.repeat(np.arange(n, dtype=np.int64), lengths), cols, values, indptr)


def least_python_loop(
    settings: TrainerSettings, base: list[Sample], typed: bool = False
) -> dict[str, float]:
    """Each record decoded typed (one msgspec C call) and paired by id in a dict. ``typed``: the
    topics hold :class:`TypedFeatures` (:func:`typed_feature_bytes`), not the dict of names."""
    model = _least_model(settings, base)
    decode: Callable[[bytes], Any] = _decode_typed if typed else decode_features
    waiting: dict[str, Any] = {}
    labels: dict[str, float] = {}

    def pair(batch: list[Any]) -> tuple[SparseRows, np.ndarray]:
        xs: list[Any] = []
        ys: list[float] = []
        for m in batch:
            if m.topic() == settings.features_topic:
                record = decode(m.value())
                label = labels.pop(record.id, None)
                if label is None:
                    waiting[record.id] = record
                else:
                    xs.append(record)
                    ys.append(label)
            else:
                label_record = decode_label(m.value())
                partner = waiting.pop(label_record.id, None)
                if partner is None:
                    labels[label_record.id] = label_record.label
                else:
                    xs.append(partner)
                    ys.append(label_record.label)
        rows = _typed_rows(model, xs) if typed else model.encode_many([x.features for x in xs])
        return rows, np.array(ys)

    return _learn_polls(settings, model, pair)


def least_compiled_loop(settings: TrainerSettings, base: list[Sample]) -> dict[str, float]:
    """The same with each poll decoded and paired in compiled code (``compiled_pairing``, a
    Rust extension built for the benchmark): what the design of a compiled per-record path
    reaches, before the windows, lineage and versions a trainer adds."""
    from compiled_pairing import Pairing  # built into the benchmark's environment only

    model = _least_model(settings, base)
    pairing = Pairing(model.dim_log2)

    def pair(batch: list[Any]) -> tuple[SparseRows, np.ndarray]:
        cols, values, indptr, y = pairing.add_poll(batch, settings.features_topic)
        offsets = np.frombuffer(indptr, np.int64)
        n = len(offsets) - 1
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
        return SparseRows(
            n, rows, np.frombuffer(cols, np.int64), np.frombuffer(values), offsets
        ), np.frombuffer(y)

    return _learn_polls(settings, model, pair)


def _least_model(settings: TrainerSettings, base: list[Sample]) -> LogisticRegression:
    model = baseline_model(settings, base)
    if not isinstance(model, LogisticRegression):
        raise TypeError("the least loops measure Millrace's logistic regression")
    return model


def _learn_polls(
    settings: TrainerSettings,
    model: LogisticRegression,
    pair: Callable[[list[Any]], tuple[SparseRows, np.ndarray]],
) -> dict[str, float]:
    """Read the topics, ``pair`` each poll's records, and score then learn its pairs in one
    compiled call."""
    learned, first, started = 0, 0, 0.0
    p_seen: list[np.ndarray] = []
    y_seen: list[np.ndarray] = []

    def on_batch(batch: list[Any]) -> None:
        nonlocal learned, first, started
        rows, y = pair(batch)
        if rows.n:
            stats = model.learn_windows(rows, y, np.array([0, rows.n]))
            p_seen.append(stats.probabilities)
            y_seen.append(y)
            learned += rows.n
        if batch and not started:
            first, started = learned, time.perf_counter()

    _, last = read_all(settings, on_batch)
    return {
        "rate": (learned - first) / (last - started),
        "log_loss": log_loss(np.concatenate(y_seen), np.concatenate(p_seen)),
        "samples": learned,
    }
