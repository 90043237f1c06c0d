"""What a partition leader cut off from the network costs a transactional producer, with
librdkafka's request timeouts and with the featurizer's ``request_timeout_ms``: on the
three-node cluster (root, network namespaces), a producer commits a transaction of 30 records
every 50 ms; the leader of one partition is cut off for 20 s; the figure is the longest time
without a commit. Three repetitions each, alternating, in one run.

``make cluster-chaos`` does not run it (it is one question, answered): ``cd bench &&
../.venv/bin/python cut_leader.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import print_table
from confluent_kafka import KafkaException, Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from millrace.kafka import TopicSpec, ensure_topics
from millrace_featurizer.settings import FeaturizerSettings
from millrace_stack.kafka_cluster import KafkaCluster
from millrace_stack.processes import ProcessTable

CUT_S = 20.0


def longest_gap(cluster: KafkaCluster, topic: str, extra: dict[str, Any]) -> float:
    ensure_topics(cluster.bootstrap, [TopicSpec(topic, 3, {})])
    producer = Producer(
        {"bootstrap.servers": cluster.bootstrap, "transactional.id": topic, **extra}
    )
    producer.init_transactions(60)
    commits: list[float] = []
    stop = threading.Event()

    def commit_every_50_ms() -> None:
        while not stop.is_set():
            try:
                producer.begin_transaction()
                for i in range(30):
                    producer.produce(topic, b"x", str(i).encode())
                producer.commit_transaction(60)
                commits.append(time.monotonic())
            except KafkaException:
                # A new transaction is begun anyway: the gap shows what the failure cost.
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(60)
            time.sleep(0.05)

    thread = threading.Thread(target=commit_every_50_ms)
    thread.start()
    time.sleep(5)
    node = cluster.leader(topic, 0)
    struck = time.monotonic()
    cluster.cut(node)
    time.sleep(CUT_S)
    cluster.heal(node)
    cluster.wait_in_sync([topic, "__transaction_state"], timeout=180)
    time.sleep(5)
    stop.set()
    thread.join(120)
    times = [struck, *(t for t in commits if t > struck)]
    return max(b - a for a, b in itertools.pairwise(times))


def main() -> None:
    ours = FeaturizerSettings().request_timeout_ms
    configs = {
        "librdkafka's defaults (30 s / 60 s)": {},
        f"request_timeout_ms {ours:,}": {"request.timeout.ms": ours, "socket.timeout.ms": ours},
    }
    gaps: dict[str, list[float]] = {name: [] for name in configs}
    with tempfile.TemporaryDirectory(prefix="millrace-cut-") as tmp:
        procs = ProcessTable(Path(tmp))
        cluster = KafkaCluster(Path(tmp) / "kafka", 3)
        cluster.start(procs)
        try:
            for rep in range(3):
                for n, (name, extra) in enumerate(configs.items()):
                    gaps[name].append(longest_gap(cluster, f"cut-{rep}-{n}", extra))
                    print(f"  {name}: {gaps[name][-1]:.1f} s", flush=True)
        finally:
            cluster.stop(procs)
    base = statistics.median(gaps["librdkafka's defaults (30 s / 60 s)"])
    print_table(
        f"A partition leader cut off for {CUT_S:g} s: the longest time without a commit",
        [
            (
                name,
                " / ".join(f"{g:.1f}" for g in sorted(values)) + " s",
                "librdkafka's defaults",
                f"{statistics.median(values) / base:.2f}x",
            )
            for name, values in gaps.items()
        ],
    )


if __name__ == "__main__":
    main()
