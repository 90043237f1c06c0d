"""Kafka as a user who outgrew one machine runs it: three KRaft nodes (combined broker and
controller, a static quorum), each in its own network namespace with its own address, with
durable settings throughout (replication factor 3, ``min.insync.replicas=2``,
``transaction.state.log.min.isr=2``, no unclean leader election, no auto-created topics).

Faults strike one node: SIGKILL, SIGTERM, SIGSTOP/SIGCONT (a pause past its session timeout),
or a cut of its link (it keeps running, reaching nothing). Which node leads a partition, and
which coordinates a transactional id or a consumer group, is asked of the cluster.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka.admin import AdminClient

from millrace.kafka import wait_for_broker
from millrace.waiting import wait_until
from millrace_stack.brokers import InfraError, KafkaNode, new_cluster_id
from millrace_stack.netns import Host, Network
from millrace_stack.processes import ProcessTable

#: Partitions of the internal topics the brokers are configured with (KafkaNode).
INTERNAL_PARTITIONS = 3


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` (over UTF-16 code units, 32-bit), as Kafka hashes ids.

    >>> java_string_hash("millrace"), java_string_hash("")
    (-1413414675, 0)
    """
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def coordinator_partition(key: str, partitions: int = INTERNAL_PARTITIONS) -> int:
    """The partition of ``__transaction_state`` (or ``__consumer_offsets``) that holds
    ``key``, as the broker computes it (``Utils.abs(key.hashCode()) % partitions``)."""
    h = java_string_hash(key)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


@dataclass
class KafkaCluster:
    data_dir: Path
    size: int = 3
    heap: str = "512m"
    network: Network = field(default_factory=Network)
    nodes: list[KafkaNode] = field(init=False)
    hosts: list[Host] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def name(self, node_id: int) -> str:
        return f"kafka-{node_id}"

    def __post_init__(self) -> None:
        """The nodes and their addresses are known before anything starts (clients' settings
        name them); :meth:`start` makes the network."""
        ids = range(1, self.size + 1)
        voters = ",".join(f"{i}@{self.network.address(i)}:9093" for i in ids)
        cluster_id = new_cluster_id()
        self.nodes = [
            KafkaNode(
                self.data_dir / f"node-{i}",
                heap=self.heap,
                host=self.network.address(i),
                node_id=i,
                voters=voters,
                cluster_id=cluster_id,
                replication=self.size,
                netns=self.network.namespace(i),
            )
            for i in ids
        ]

    def start(self, procs: ProcessTable, timeout: float = 120.0) -> None:
        """The network, then every node at once (a static quorum needs a majority to start)."""
        self.network.create()
        self.hosts = [self.network.add_host(node.node_id) for node in self.nodes]
        for node in self.nodes:
            node.launch(procs, self.name(node.node_id))
        try:
            wait_for_broker(self.bootstrap, timeout)
            wait_until(
                lambda: len(self.live_brokers()) == self.size, timeout, "every broker registered"
            )
        except TimeoutError as exc:
            tails = "".join(
                procs.log_path(self.name(n.node_id)).read_text(errors="replace")[-1500:]
                for n in self.nodes
            )
            self.stop(procs)
            raise InfraError(f"the Kafka cluster did not become ready: {exc}\n{tails}") from None

    def stop(self, procs: ProcessTable) -> None:
        for node in self.nodes:
            procs.stop(self.name(node.node_id))
        self.network.destroy()

    # -- faults ---------------------------------------------------------------------------

    def kill(self, procs: ProcessTable, node_id: int) -> None:
        procs.kill(self.name(node_id))

    def terminate(self, procs: ProcessTable, node_id: int) -> None:
        """A clean shutdown (SIGTERM: the node hands over its leaderships first)."""
        procs.stop(self.name(node_id), timeout=60)

    def restart(self, procs: ProcessTable, node_id: int, timeout: float = 120.0) -> None:
        """Start the node again and wait until it is registered with the controller."""
        self.nodes[node_id - 1].launch(procs, self.name(node_id))
        wait_until(lambda: node_id in self.live_brokers(), timeout, f"broker {node_id} to rejoin")

    def pause(self, procs: ProcessTable, node_id: int) -> None:
        self._signal(procs, node_id, signal.SIGSTOP)

    def resume(self, procs: ProcessTable, node_id: int) -> None:
        self._signal(procs, node_id, signal.SIGCONT)

    def _signal(self, procs: ProcessTable, node_id: int, sig: signal.Signals) -> None:
        pid = procs.pid(self.name(node_id))
        if pid is None:
            raise InfraError(f"broker {node_id} is not running")
        os.killpg(pid, sig)

    def cut(self, node_id: int) -> None:
        self.network.cut(self.hosts[node_id - 1])

    def heal(self, node_id: int) -> None:
        self.network.heal(self.hosts[node_id - 1])

    # -- who does what ----------------------------------------------------------------------

    def _admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})

    def live_brokers(self) -> set[int]:
        try:
            return set(self._admin().list_topics(timeout=5).brokers)
        except Exception:
            return set()

    def leader(self, topic: str, partition: int) -> int:
        metadata = self._admin().list_topics(topic, timeout=10)
        return int(metadata.topics[topic].partitions[partition].leader)

    def transaction_coordinator(self, transactional_id: str) -> int:
        """The node whose ``__transaction_state`` partition holds ``transactional_id``."""
        return self.leader("__transaction_state", coordinator_partition(transactional_id))

    def group_coordinator(self, group: str) -> int:
        return self.leader("__consumer_offsets", coordinator_partition(group))

    def wait_in_sync(self, topics: list[str], timeout: float = 120.0) -> None:
        """Until every partition of ``topics`` has all its replicas in sync again."""

        def in_sync() -> bool:
            metadata = self._admin().list_topics(timeout=10)
            return all(
                len(p.isrs) == len(p.replicas)
                for t in topics
                if t in metadata.topics
                for p in metadata.topics[t].partitions.values()
            )

        wait_until(in_sync, timeout, "every replica in sync", interval=0.5)
