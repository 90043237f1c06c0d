"""The chaos run on a three-node Kafka cluster, scaled down to a few days: each kind of node
fault once (the leader, the transaction and the group coordinator SIGKILLed and restarted, a
node cut off and one paused past the session timeout) with a featurizer SIGKILL among them,
then the exact account (``make cluster-chaos`` runs it, then two months and more faults)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.chaos import ChaosConfig, run_chaos

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None,
        reason="network namespaces need root and iproute2",
    ),
    # About 5 minutes on 2 cores.
    pytest.mark.timeout(1200),
]


def test_node_faults_on_a_three_node_cluster_lose_nothing_and_change_nothing(tmp_path: Path):
    cfg = ChaosConfig(
        tmp_path,
        start="2013-01-15",
        end="2013-01-19",
        plan=(
            "node_leader",
            "featurizer",
            "node_txn_coordinator",
            "node_cut",
            "node_pause",
            "node_group_coordinator",
        ),
        batch_size=10,
        pause_s=1.0,
        kafka_nodes=3,
        hold_s=12.0,
    )
    report = run_chaos(cfg)
    assert report.events > 5000 and report.node_faults == 5
    assert report.lost == 0 and report.duplicated == 0
    assert report.records == report.expected_records
    assert report.records_identical, "a committed record differs from the backfill's"
    assert report.aborted_reads == 0 and report.offsets_backwards == 0
    assert report.state_identical, "Redis state differs from the backfill's"
    assert report.versions > 1 and report.artifacts_identical
    assert report.hanging_transactions == []
    # The aim of `make cluster-chaos` is 30 s; a loaded machine gets some room here.
    assert all(seconds < 40 for _, seconds in report.stalls), report.stalls
