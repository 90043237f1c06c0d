"""``make chaos``: two months of flights replayed at full speed through the whole pipeline while
the featurizer is SIGKILLed three times (the first inside a transaction), the trainer twice,
the predictor once, the broker killed and restarted once, and Redis loses the state three times
(FLUSHALL; killed and restarted empty; the events topic's records deleted, as retention does,
then FLUSHALL); then the exact account, predictions served meanwhile included.

Prints a table and merges ``chaos_*`` figures into bench/results.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from common import print_table, record

# The harness lives beside the tests that run it scaled down (tests/chaos.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.chaos import ChaosConfig, ChaosReport, run_chaos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start", default="2013-01-15")
    parser.add_argument("--end", default="2013-03-15")
    parser.add_argument("--batch-size", type=int, default=100, help="events per transaction")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="millrace-chaos-") as tmp:
        cfg = ChaosConfig(Path(tmp), args.start, args.end, batch_size=args.batch_size)
        report = run_chaos(cfg, say=lambda line: print(line, flush=True))
    print_table("Chaos: kills, a broker restart, Redis losses, and the account", rows(report))
    record(report.figures())


#: The aim for the longest stall after a blow on one broker.
STALL_AIM_S = 15.0


def rows(
    report: ChaosReport, stall_aim_s: Callable[[str], float] = lambda _: STALL_AIM_S
) -> list[tuple[str, str, str, str]]:
    """The account's table (make cluster-chaos prints it too, with its own aims and rows)."""
    longest = max(report.stalls, key=lambda stall: stall[1] / stall_aim_s(stall[0]), default=None)
    return [
        ("events replayed", f"{report.events:,}", "", ""),
        (
            "records expected (features, labels, dead letters)",
            f"{report.expected_records:,}",
            "",
            "",
        ),
        ("records committed", f"{report.records:,}", "expected", "equal"),
        ("lost", str(report.lost), "0", "0"),
        ("duplicated", str(report.duplicated), "0", "0"),
        ("records byte-identical to the backfill", str(report.records_identical), "", "True"),
        ("Redis state identical to the backfill", str(report.state_identical), "", "True"),
        (
            "versions identical to an uninterrupted trainer",
            f"{report.artifacts_identical} ({report.versions} vs {report.reference_versions}"
            f" versions; differing: {report.differing_versions[:5] or 'none'})",
            "",
            "True",
        ),
        (
            "first featurizer kill inside a transaction",
            str(report.killed_inside_a_transaction),
            "",
            "True",
        ),
        *[
            (f"stall after the {what} blow", f"{seconds:.1f} s", "", f"<= {stall_aim_s(what):g} s")
            for what, seconds in report.stalls
        ],
        (
            "longest stall against its aim",
            f"{longest[1]:.1f} s ({longest[0]})" if longest else "none",
            f"{stall_aim_s(longest[0]):g} s" if longest else "",
            f"{longest[1] / stall_aim_s(longest[0]):.2f}x (<= 1)" if longest else "",
        ),
        ("services restarted by the supervisor", ", ".join(report.restarts) or "none", "", ""),
        (
            "Redis blows (flush, restart empty, failover, retention + flush)",
            str(report.redis_blows),
            "",
            "",
        ),
        (
            "predictions served from state known incomplete",
            f"{report.served_from_incomplete_state} of {report.probes:,} asked",
            "0",
            "0",
        ),
        ("predictions refused (503) while incomplete", str(report.refused_incomplete), "", ""),
    ]
