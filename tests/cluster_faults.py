"""Node faults for the chaos run on a three-node Kafka cluster (``ChaosConfig.kafka_nodes=3``).

Each strikes one node, chosen by what it does for the pipeline: the leader of a features
partition, the transaction coordinator of the featurizer's transactional id, the group
coordinator of its consumer group. A SIGKILL is followed by a restart two seconds later; a cut
(the node's link down: it runs on, reaching nothing) and a SIGSTOP pause last ``hold_s``, longer
than the broker session timeout; a rolling restart SIGTERMs and restarts every node in turn.
The restore runs in a thread so that the stall is timed while the node is still away; the next
fault waits until every replica is in sync again, so that faults strike one node at a time.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from millrace.settings import CommonSettings
from millrace_stack.brokers import ensure_kafka_jars
from millrace_stack.kafka_cluster import KafkaCluster
from millrace_stack.processes import ProcessTable

NODE_FAULTS = (
    "node_leader",
    "node_txn_coordinator",
    "node_group_coordinator",
    "node_rolling",
    "node_cut",
    "node_pause",
)


@dataclass
class NodeFaults:
    cluster: KafkaCluster
    procs: ProcessTable
    settings: CommonSettings
    #: The featurizer's consumer group and transactional id.
    group: str
    transactional_id: str
    hold_s: float = 20.0

    def target(self, fault: str) -> int:
        if fault == "node_txn_coordinator":
            return self.cluster.transaction_coordinator(self.transactional_id)
        if fault == "node_group_coordinator":
            return self.cluster.group_coordinator(self.group)
        return self.cluster.leader(self.settings.features_topic, 0)

    def strike(self, fault: str) -> tuple[int, threading.Thread]:
        """Strike ``fault``; (the node struck, the thread that restores it, started)."""
        node = self.target(fault)
        cluster, procs = self.cluster, self.procs
        restore: Callable[[], None]
        if fault == "node_rolling":
            restore = self._rolling
        elif fault == "node_cut":
            cluster.cut(node)
            restore = self._after(self.hold_s, lambda: cluster.heal(node))
        elif fault == "node_pause":
            cluster.pause(procs, node)
            restore = self._after(self.hold_s, lambda: cluster.resume(procs, node))
        else:
            cluster.kill(procs, node)
            restore = self._after(2.0, lambda: cluster.restart(procs, node))
        thread = threading.Thread(target=restore, name=f"restore {fault}", daemon=True)
        thread.start()
        return node, thread

    @staticmethod
    def _after(seconds: float, then: Callable[[], None]) -> Callable[[], None]:
        def restore() -> None:
            time.sleep(seconds)
            then()

        return restore

    def _rolling(self) -> None:
        for node in self.cluster.nodes:
            self.cluster.terminate(self.procs, node.node_id)
            self.cluster.restart(self.procs, node.node_id)
            self.in_sync()

    def in_sync(self) -> None:
        s = self.settings
        topics = [s.events_topic, s.features_topic, s.labels_topic, "__transaction_state"]
        self.cluster.wait_in_sync([*topics, "__consumer_offsets"], timeout=180)

    def hanging_transactions(self) -> list[str]:
        """Kafka's own ``find-hanging`` on every node: the lines naming a hanging one."""
        lib = ensure_kafka_jars()
        found = []
        for node in self.cluster.nodes:
            command = [
                "java",
                "-cp",
                f"{lib}/*",
                "org.apache.kafka.tools.TransactionsCommand",
                "--bootstrap-server",
                self.cluster.bootstrap,
                "find-hanging",
                "--broker-id",
                str(node.node_id),
            ]
            result = subprocess.run(command, capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                found.append(f"find-hanging on {node.node_id} failed: {result.stderr[-500:]}")
                continue
            # A header line, then one line per hanging transaction.
            rows = [line for line in result.stdout.splitlines() if line.strip()]
            found += [f"node {node.node_id}: {line}" for line in rows[1:]]
        return found
