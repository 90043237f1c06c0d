"""The chaos run of ``make chaos`` scaled down to a few days: the mechanism, every kind of blow
once (Redis restarted empty for the Redis losses; tests/integration/test_state_loss.py has the
flush and the retention)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import ChaosConfig, run_chaos

pytestmark = pytest.mark.integration


def test_kills_and_a_broker_restart_lose_nothing_and_change_nothing(tmp_path: Path):
    cfg = ChaosConfig(
        tmp_path,
        start="2013-01-15",
        end="2013-01-19",
        plan=("featurizer", "trainer", "broker", "redis_restart_empty", "predictor"),
        batch_size=20,
        pause_s=1.0,
    )
    report = run_chaos(cfg)
    assert report.events > 5000
    assert report.lost == 0 and report.duplicated == 0
    assert report.records == report.expected_records
    assert report.records_identical, "a committed record differs from the backfill's"
    assert report.state_identical, "Redis state differs from the backfill's"
    assert report.killed_inside_a_transaction
    assert report.redis_blows == 1 and report.served_from_incomplete_state == 0, report.probes
    assert report.versions > 1 and report.artifacts_identical
    assert {what for what, _ in report.stalls} >= {"trainer", "predictor"}
    assert all(seconds < 60 for _, seconds in report.stalls), report.stalls
