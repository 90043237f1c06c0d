"""``make cluster-chaos``: two months of flights replayed at full speed through the whole
pipeline on a three-node Kafka cluster (KRaft, each node in its own network namespace,
replication factor 3, ``min.insync.replicas=2``) while node faults strike one node at a time:
the leader of a features partition, the featurizer's transaction coordinator and its group
coordinator SIGKILLed and restarted, a rolling SIGTERM restart of all three, a node cut off and
a node paused (SIGSTOP) past the session timeout; and among them the service SIGKILLs of
``make chaos``. Then the exact account, a read_committed reader's view during the run included,
and Kafka's own ``find-hanging``.

Prints a table and merges ``cluster_chaos_*`` figures into bench/results.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from chaos import STALL_AIM_S as SERVICE_AIM_S
from chaos import rows
from common import print_table, record

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.chaos import ChaosConfig, run_chaos

PLAN = (
    "node_leader",
    "featurizer",
    "node_txn_coordinator",
    "node_group_coordinator",
    "node_cut",
    "trainer",
    "node_pause",
    "node_rolling",
    "node_leader",
    "node_txn_coordinator",
    "featurizer",
    "node_cut",
    "node_pause",
    "node_group_coordinator",
    "node_leader",
    "predictor",
)
#: The aim for the longest stall after a single-node fault.
STALL_AIM_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start", default="2013-01-15")
    parser.add_argument("--end", default="2013-03-15")
    parser.add_argument("--batch-size", type=int, default=20, help="events per transaction")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds a node is cut/paused")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="millrace-cluster-chaos-") as tmp:
        cfg = ChaosConfig(
            Path(tmp),
            args.start,
            args.end,
            plan=PLAN,
            batch_size=args.batch_size,
            kafka_nodes=3,
            hold_s=args.hold,
        )
        report = run_chaos(cfg, say=lambda line: print(line, flush=True))
    node_stalls = [s for what, s in report.stalls if what.startswith("node_")]
    longest = max(node_stalls, default=0.0)
    table = [
        *rows(report, lambda blow: STALL_AIM_S if blow.startswith("node_") else SERVICE_AIM_S),
        ("node faults struck", str(report.node_faults), ">= 12", ""),
        (
            "aborted or uncommitted records read (read_committed)",
            str(report.aborted_reads),
            "0",
            "0",
        ),
        ("offsets seen going backwards", str(report.offsets_backwards), "0", "0"),
        (
            "transactions left hanging (find-hanging)",
            str(len(report.hanging_transactions)),
            "0",
            "; ".join(report.hanging_transactions[:3]),
        ),
        (
            "longest stall after a node fault",
            f"{longest:.1f} s",
            f"{STALL_AIM_S:g} s",
            f"{longest / STALL_AIM_S:.2f}x (<= 1)",
        ),
    ]
    print_table("Cluster chaos: node faults on three KRaft nodes, and the account", table)
    record(
        {
            "cluster_chaos_events": report.events,
            "cluster_chaos_faults": report.node_faults,
            "cluster_chaos_lost": report.lost,
            "cluster_chaos_duplicated": report.duplicated,
            "cluster_chaos_aborted_reads": report.aborted_reads,
            "cluster_chaos_artifacts_identical": report.artifacts_identical,
            "cluster_chaos_state_identical": report.state_identical,
            "cluster_chaos_hanging_transactions": len(report.hanging_transactions),
            "cluster_chaos_max_stall_s": round(longest, 2),
        }
    )


if __name__ == "__main__":
    main()
