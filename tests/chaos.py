"""Chaos: the whole pipeline under SIGKILLs and a broker restart, then an exact account.

:func:`run_chaos` starts its own broker, Redis and the four services as processes, replays a
range of the flights at full speed, and meanwhile SIGKILLs the featurizer (the first time while
one of its transactions is open), the trainer and the predictor, and kills and restarts the
broker. Every killed process is restarted at once, as a supervisor would. Then it accounts:

- events in vs feature, label and dead-letter records out: none lost, none duplicated, each
  record byte-identical to the backfill of the same events;
- Redis's entity state equal to the backfill's;
- every version the killed trainer published byte-identical to what an uninterrupted trainer
  publishes from the same topics;
- the stall after each kill: the time until the part downstream of the killed one moved again
  (the next committed feature after a featurizer kill or the broker restart, the trainer's and
  the predictor's health after theirs).

``make chaos`` runs two months (``bench/chaos.py``); ``make test`` runs a few days of it.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from millrace.days import day_start_ms
from millrace.features import load_feature_module
from millrace.featurize import Featurizer, backfill, from_envelopes
from millrace.kafka import consumer_config, ensure_topics, pipeline_topics, read_range, watermarks
from millrace.registry_client import RegistryClient
from millrace.settings import CommonSettings
from millrace.signing import SigningKey
from millrace.state import RedisState
from millrace.waiting import wait_until
from millrace_cli.replay import replay
from millrace_cli.secrets import SIGNING_KEY, TOKEN, ensure_secrets, service_secrets
from millrace_flights.events import SCHEDULED, flight_events, load_flights
from millrace_stack.brokers import KafkaNode, SentinelGroup
from millrace_stack.kafka_cluster import KafkaCluster
from millrace_stack.processes import ProcessTable, free_port
from tests.cluster_faults import NodeFaults
from tests.helpers import delete_records_below, processed_offsets

MODULES = {
    "model-registry": "millrace_registry",
    "featurizer": "millrace_featurizer",
    "trainer": "millrace_trainer",
    "predictor": "millrace_predictor",
}
MODEL = "chaos"


@dataclass
class ChaosConfig:
    work_dir: Path
    start: str = "2013-01-15"
    end: str = "2013-03-15"
    baseline_start: str = "2013-01-01"
    #: The order of the blows; "featurizer" the first time waits for an open transaction.
    plan: tuple[str, ...] = (
        "featurizer",
        "trainer",
        "redis_flushall",
        "featurizer",
        "broker",
        "redis_restart_empty",
        "predictor",
        "redis_failover",
        "retention_then_flushall",
        "featurizer",
        "trainer",
    )
    #: Events per featurizer transaction: small, so the stream lasts through the plan.
    batch_size: int = 100
    pause_s: float = 1.5
    #: Kafka: one broker, or a cluster of this many nodes in network namespaces of their own
    #: (the plan may then hold the node faults of tests/cluster_faults.py).
    kafka_nodes: int = 1
    #: How long a cut-off or paused node stays away.
    hold_s: float = 20.0


@dataclass
class ChaosReport:
    events: int = 0
    expected_records: int = 0
    records: int = 0
    lost: int = 0
    duplicated: int = 0
    records_identical: bool = False
    state_identical: bool = False
    versions: int = 0
    reference_versions: int = 0
    #: Versions whose bytes differ from the uninterrupted trainer's.
    differing_versions: list[int] = field(default_factory=list)
    artifacts_identical: bool = False
    killed_inside_a_transaction: bool = False
    stalls: list[tuple[str, float]] = field(default_factory=list)
    #: Services that exited by themselves (a fatal error, a stall) and were restarted.
    restarts: list[str] = field(default_factory=list)
    #: Redis blows struck, and predictions answered 200 while the state was not known complete
    #: (after a Redis blow and before the featurizer marked the state complete again).
    redis_blows: int = 0
    served_from_incomplete_state: int = 0
    #: Predict requests sent meanwhile, and how many were refused (503) while incomplete.
    probes: int = 0
    refused_incomplete: int = 0
    #: Node faults struck (a cluster run), records a read_committed reader saw during the run
    #: that are not the committed ones at their offsets (aborted or uncommitted), offsets seen
    #: going backwards, and transactions left hanging at the end (Kafka's find-hanging).
    node_faults: int = 0
    aborted_reads: int = 0
    offsets_backwards: int = 0
    hanging_transactions: list[str] = field(default_factory=list)

    @property
    def max_stall_s(self) -> float:
        return max((s for _, s in self.stalls), default=0.0)

    def figures(self) -> dict[str, Any]:
        return {
            "chaos_events": self.events,
            "chaos_lost": self.lost,
            "chaos_duplicated": self.duplicated,
            "chaos_artifacts_identical": self.artifacts_identical,
            "chaos_max_stall_s": round(self.max_stall_s, 2),
            "chaos_redis_blows": self.redis_blows,
            "chaos_served_from_incomplete_state": self.served_from_incomplete_state,
            "chaos_state_identical": self.state_identical,
        }


class _Arrivals(threading.Thread):
    """What a read_committed reader of a topic sees as it arrives, with when: every partition
    assigned from its start (no group, so no rebalance reads anything twice)."""

    def __init__(self, settings: CommonSettings, topic: str) -> None:
        super().__init__(daemon=True)
        self.last_at = 0.0
        #: When each poll that brought records returned.
        self.arrivals: list[float] = []
        #: (partition, offset) -> the value seen there.
        self.seen: dict[tuple[int, int], bytes] = {}
        self.backwards = 0
        self._halt = threading.Event()
        self._consumer = Consumer(consumer_config(settings.kafka, f"chaos-watch-{topic}"))
        partitions = watermarks(self._consumer, topic)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    @property
    def count(self) -> int:
        return len(self.seen)

    def run(self) -> None:
        newest: dict[int, int] = {}
        while not self._halt.is_set():
            got = [m for m in self._consumer.consume(1000, timeout=0.2) if m.error() is None]
            for m in got:
                partition, offset = m.partition() or 0, m.offset() or 0
                self.backwards += offset <= newest.get(partition, -1)
                newest[partition] = offset
                self.seen[(partition, offset)] = m.value() or b""
            if got:
                self.last_at = time.monotonic()
                self.arrivals.append(self.last_at)
        self._consumer.close()

    def longest_gap(self, since: float) -> float:
        """The longest time without a new record from ``since`` to the latest arrival."""
        times = [since, *(t for t in list(self.arrivals) if t > since)]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


class _Prober(threading.Thread):
    """Asks the predictor for a prediction every 50 ms and, while the state is flagged
    incomplete (from a Redis blow until the featurizer marks it complete again), counts the
    answers: a 200 then was served from state known incomplete."""

    def __init__(self, url: str, event: bytes, state: RedisState, report: ChaosReport) -> None:
        super().__init__(daemon=True)
        self.url, self.event, self.state, self.report = url, event, state, report
        #: Set by a Redis blow once it has struck; cleared once the state is complete again.
        self.incomplete = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self._halt.wait(0.05):
                if self.incomplete.is_set() and self.state.completeness() is None:
                    self.incomplete.clear()
                flagged = self.incomplete.is_set()
                try:
                    status = http.post(self.url + "/predict", content=self.event).status_code
                except httpx.HTTPError:
                    continue  # the predictor being killed and restarted
                self.report.probes += 1
                # Incomplete before the request (flagged) and still after it: the predictor read
                # incomplete state. A 200 as the featurizer marks the state complete is not.
                if flagged and status == 200 and self.state.completeness() is not None:
                    self.report.served_from_incomplete_state += 1
                elif flagged and status == 503:
                    self.report.refused_incomplete += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


class Chaos:
    def __init__(self, cfg: ChaosConfig, say: Callable[[str], object]) -> None:
        self.cfg = cfg
        self.say = say
        self.procs = ProcessTable(cfg.work_dir)
        self.kafka: KafkaNode | KafkaCluster = (
            KafkaNode(cfg.work_dir / "kafka", free_port(), free_port(), heap="1g")
            if cfg.kafka_nodes == 1
            else KafkaCluster(cfg.work_dir / "kafka", cfg.kafka_nodes)
        )
        # Redis as a user who cannot lose it runs it: a master, two replicas, three sentinels.
        self.redis = SentinelGroup(
            cfg.work_dir / "redis", [free_port() for _ in range(3)], [free_port() for _ in range(3)]
        )
        self.ports = {name: free_port() for name in MODULES}
        self.settings = CommonSettings(
            kafka_bootstrap=self.kafka.bootstrap,
            redis_sentinels=self.redis.sentinels,
            redis_master_name=self.redis.master_name,
            topic_prefix="chaos.",
        )
        self.report = ChaosReport()
        self.node_faults = (
            NodeFaults(
                self.kafka,
                self.procs,
                self.settings,
                group=f"{self.settings.topic_prefix}millrace-featurizer",
                transactional_id=f"{self.settings.topic_prefix}millrace-featurizer-featurizer-0",
                hold_s=cfg.hold_s,
            )
            if isinstance(self.kafka, KafkaCluster)
            else None
        )

    # -- processes ------------------------------------------------------------------------

    def env(self, name: str, **extra: str) -> dict[str, str]:
        return {
            "MILLRACE_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "MILLRACE_REDIS_SENTINELS": ",".join(self.redis.sentinels),
            "MILLRACE_REDIS_MASTER_NAME": self.redis.master_name,
            "MILLRACE_TOPIC_PREFIX": "chaos.",
            "MILLRACE_REGISTRY_URL": self.url("model-registry"),
            "MILLRACE_DATA_DIR": str(self.cfg.work_dir / "registry"),
            "MILLRACE_MODEL_NAME": MODEL,
            "MILLRACE_PORT": str(self.ports[name]),
            "MILLRACE_INSTANCE_ID": f"{name}-0",
            "MILLRACE_SESSION_TIMEOUT_MS": "6000",
            "MILLRACE_BATCH_SIZE": str(self.cfg.batch_size),
            "MILLRACE_BASELINE_START": self.cfg.baseline_start,
            "MILLRACE_BASELINE_END": self.cfg.start,
            # Wall-clock idleness would make what is learned depend on timing: off.
            "MILLRACE_IDLE_PARTITION_MS": str(10**12),
            # So would versions published by the wall clock (a quiet stream's): off too.
            "MILLRACE_PUBLISH_IDLE_S": "null",
            "MILLRACE_PUBLISH_WITHIN_S": "null",
            "MILLRACE_POLL_INTERVAL_S": "2",
            **service_secrets(self.cfg.work_dir, name),
            **extra,
        }

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name: str, **extra: str) -> None:
        self.procs.start(name, [sys.executable, "-m", MODULES[name]], self.env(name, **extra))

    def healthy(self, name: str, path: str = "/health") -> bool:
        try:
            return httpx.get(self.url(name) + path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    # -- the run --------------------------------------------------------------------------

    def supervise(self, stop: threading.Event) -> None:
        """Restart a service that exited by itself, as its supervisor would."""
        while not stop.wait(0.5):
            for name in MODULES:
                if self.procs.exited(name):
                    self.report.restarts.append(name)
                    self.say(f"supervisor: {name} exited; restarting it")
                    self.start(name)

    def run(self) -> ChaosReport:
        self.kafka.start(self.procs)
        self.redis.start(self.procs)
        stop = threading.Event()
        supervisor = threading.Thread(target=self.supervise, args=(stop,), daemon=True)
        try:
            supervisor.start()
            self._run()
        finally:
            stop.set()
            supervisor.join(5)
            redis_servers = [f"{kind}-{i}" for kind in ("sentinel", "redis") for i in range(3)]
            for name in [*reversed(MODULES), "trainer-b", *redis_servers]:
                self.procs.stop(name)
            self.kafka.stop(self.procs)
        return self.report

    def _run(self) -> None:
        cfg, report = self.cfg, self.report
        ensure_topics(self.settings.kafka, pipeline_topics(self.settings))
        events = flight_events(load_flights(), day_start_ms(cfg.start), day_start_ms(cfg.end))
        truth = backfill(
            Featurizer(load_feature_module(self.settings.feature_module)), from_envelopes(events)
        )
        report.events = len(events)
        for name in MODULES:
            self.start(name)
            wait_until(lambda n=name: self.healthy(n), 300, name)  # type: ignore[misc]
        wait_until(lambda: self.healthy("predictor", "/ready"), 120, "the predictor")
        features = _Arrivals(self.settings, self.settings.features_topic)
        features.start()
        scheduled = next(e for e in events if e["type"] == SCHEDULED)
        state = RedisState.from_settings(self.settings)
        self.prober = _Prober(self.url("predictor"), orjson.dumps(scheduled), state, report)
        self.prober.start()
        self.say(f"replaying {len(events):,} events at full speed")
        replay(self.settings.kafka, self.settings.events_topic, events)
        for blow in cfg.plan:
            time.sleep(cfg.pause_s)
            remaining = features.count < len(truth.features)
            stall = self._strike(blow, features, len(truth.features))
            if stall is not None and (blow in ("trainer", "predictor") or remaining):
                report.stalls.append((blow, stall))
                self.say(f"{blow}: downstream moved again {stall:.1f} s after the blow")
            else:
                self.say(f"{blow}: struck after the featurizer had finished (no stall to time)")
        wait_until(
            lambda: features.count >= len(truth.features), 600, "every feature", interval=1.0
        )
        features.stop()
        self.prober.stop()
        self._account(truth.feature_bytes + truth.label_bytes, truth.dead, truth.state)
        self._account_reads(features)
        if self.node_faults is not None:
            report.hanging_transactions = self.node_faults.hanging_transactions()
        self._compare_trainers()

    def _strike(self, blow: str, features: _Arrivals, expected: int) -> float | None:
        struck = time.monotonic()
        if blow.startswith("node_"):
            return self._strike_node(blow, features, expected)
        if blow.startswith(("redis_", "retention_")):
            self._strike_redis(blow)
            back = time.monotonic()
            complete = lambda: not self.prober.incomplete.is_set()  # noqa: E731
            return self._until(lambda: complete() and features.last_at > back, since=struck)
        if blow == "broker":
            self.procs.kill("kafka")
            time.sleep(2.0)
            self.kafka.start(self.procs)
            back = time.monotonic()
            return self._until(lambda: features.last_at > back, since=struck)
        if blow == "featurizer" and not self.report.killed_inside_a_transaction:
            self.report.killed_inside_a_transaction = self._wait_for_open_transaction()
            struck = time.monotonic()
        self.procs.kill(blow)
        self.start(blow)
        if blow == "featurizer":
            # Until the new process is up and a feature it committed arrives (what the dead one
            # committed just before the blow may still be on its way: it does not count).
            up = self._until(lambda: self.healthy("featurizer"))
            if up is None:
                return None
            ready = struck + up
            return self._until(lambda: features.last_at > ready, since=struck)
        path = "/ready" if blow == "predictor" else "/health"
        return self._until(lambda: self.healthy(blow, path))

    def _strike_node(self, fault: str, features: _Arrivals, expected: int) -> float | None:
        """One node fault; the stall is the longest time without a new committed feature from
        the blow until the node is back, in sync, and features flow again (while the stream
        lasts): what a reader downstream waits for, whichever phase of the fault it falls in."""
        assert self.node_faults is not None, f"{fault} needs kafka_nodes > 1"
        struck = time.monotonic()
        node, restoring = self.node_faults.strike(fault)
        self.report.node_faults += 1
        self.say(f"{fault}: node {node}")
        restoring.join()
        self.node_faults.in_sync()
        back = time.monotonic()
        flowing = self._until(
            lambda: features.last_at > back or features.count >= expected, self.cfg.hold_s + 90
        )
        if flowing is None:
            return None
        return features.longest_gap(struck)

    def _strike_redis(self, blow: str) -> None:
        """Redis loses the state: flushed, killed and restarted empty, its master SIGKILLed
        and failed over by the sentinels (a replica that may lack the last writes), or flushed
        after retention deleted every event so far (only the changelog can rebuild it then)."""
        self.report.redis_blows += 1
        master = self.redis.master()
        assert master is not None, "the sentinels name no master"
        index = self.redis.redis_ports.index(master)
        client = redis.Redis(port=master)
        if blow == "redis_restart_empty":
            self.procs.kill(f"redis-{index}")
            self.redis.restart(self.procs, index)
        elif blow == "redis_failover":
            self.procs.kill(f"redis-{index}")
            wait_until(
                lambda: self.redis.master() not in (None, master), 60, "the sentinels' failover"
            )
            self.redis.restart(self.procs, index)  # back, as a replica of the new master
        else:
            if blow == "retention_then_flushall":
                # Retention of what the featurizer has processed (deleting what it has not
                # read would lose those events, whatever the featurizer did).
                topic = self.settings.events_topic
                group = f"{self.settings.topic_prefix}millrace-featurizer"
                done = processed_offsets(self.settings.kafka, group, topic)
                delete_records_below(self.settings.kafka, topic, done)
            client.flushall()
        self.prober.incomplete.set()
        client.close()

    @staticmethod
    def _until(
        moved: Callable[[], bool], timeout: float = 300.0, since: float | None = None
    ) -> float | None:
        """Seconds from ``since`` (default: now) until ``moved()``; None if it never did."""
        started = time.monotonic() if since is None else since
        while time.monotonic() - started < timeout:
            if moved():
                return time.monotonic() - started
            time.sleep(0.05)
        return None

    def _wait_for_open_transaction(self, timeout: float = 30.0) -> bool:
        """Until a features partition has records beyond its last stable offset."""
        topic = self.settings.features_topic
        committed = Consumer(consumer_config(self.settings.kafka, "chaos-lso"))
        uncommitted = Consumer(
            consumer_config(
                self.settings.kafka, "chaos-hw", **{"isolation.level": "read_uncommitted"}
            )
        )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for partition in range(3):
                    tp = TopicPartition(topic, partition)
                    try:
                        stable = committed.get_watermark_offsets(tp, timeout=5, cached=False)[1]
                        high = uncommitted.get_watermark_offsets(tp, timeout=5, cached=False)[1]
                    except KafkaException:  # a leader moving (a node fault just before)
                        continue
                    if high > stable:
                        return True
                time.sleep(0.01)
            return False
        finally:
            committed.close()
            uncommitted.close()

    # -- the account ----------------------------------------------------------------------

    def _account_reads(self, features: _Arrivals) -> None:
        """What the reader saw during the run against the committed records at the end."""
        committed = dict(_read_to_end_at(self.settings, self.settings.features_topic))
        self.report.aborted_reads = sum(
            committed.get(where) != value for where, value in features.seen.items()
        )
        self.report.offsets_backwards = features.backwards

    def _account(
        self, expected: list[bytes], dead: list[tuple[bytes, str]], state: dict[str, Any]
    ) -> None:
        report, s = self.report, self.settings
        wanted = Counter(expected) + Counter(value for value, _ in dead)
        got: Counter[bytes] = Counter()
        for topic in (s.features_topic, s.labels_topic, s.dead_letter_topic):
            got.update(_read_to_end(s, topic))
        report.expected_records = sum(wanted.values())
        report.records = sum(got.values())
        report.lost = sum((wanted - got).values())
        report.duplicated = sum((got - wanted).values())
        report.records_identical = got == wanted
        live = RedisState.from_settings(s).read_many(state)
        report.state_identical = live == state

    def _compare_trainers(self) -> None:
        secrets = ensure_secrets(self.cfg.work_dir)
        client = RegistryClient(
            self.url("model-registry"), secrets[TOKEN], SigningKey.from_text(secrets[SIGNING_KEY])
        )
        try:
            total = _settle(lambda: _versions(client, MODEL))
            self.procs.stop("trainer")
            extra = {"MILLRACE_MODEL_NAME": f"{MODEL}-b", "MILLRACE_GROUP": "trainer-b"}
            self.ports["trainer-b"] = free_port()
            self.procs.start(
                "trainer-b",
                [sys.executable, "-m", "millrace_trainer"],
                {**self.env("trainer", **extra), "MILLRACE_PORT": str(self.ports["trainer-b"])},
            )
            reference = _settle(lambda: _versions(client, f"{MODEL}-b"))
            self.report.versions, self.report.reference_versions = total, reference
            self.report.differing_versions = [
                v
                for v in range(1, min(total, reference) + 1)
                if client.download(MODEL, v) != client.download(f"{MODEL}-b", v)
            ]
            self.report.artifacts_identical = (
                total == reference and not self.report.differing_versions
            )
        finally:
            client.close()


def _versions(client: RegistryClient, model: str) -> int:
    try:
        return int(client.list_versions(model, limit=1)["total"])
    except Exception:
        return 0


def _settle(count: Callable[[], int], quiet_s: float = 15.0, timeout: float = 900.0) -> int:
    """The count once it has stopped changing for ``quiet_s``."""
    last, since = count(), time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = count()
        if now != last or now <= 1:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise TimeoutError(f"versions still changing after {timeout:g} s")


def _read_to_end(settings: CommonSettings, topic: str) -> list[bytes]:
    return [value for _, value in _read_to_end_at(settings, topic)]


def _read_to_end_at(settings: CommonSettings, topic: str) -> list[tuple[tuple[int, int], bytes]]:
    """((partition, offset), value) of every committed record of ``topic``."""
    reader = Consumer(consumer_config(settings.kafka, f"chaos-account-{topic}"))
    try:
        found = []
        for partition, (low, high) in watermarks(reader, topic).items():
            for batch in read_range(reader, topic, partition, low, high, timeout=120):
                found += [((partition, m.offset() or 0), m.value() or b"") for m in batch]
        return found
    finally:
        reader.close()


def run_chaos(cfg: ChaosConfig, say: Callable[[str], object] = print) -> ChaosReport:
    return Chaos(cfg, say).run()


__all__ = ["ChaosConfig", "ChaosReport", "run_chaos"]
