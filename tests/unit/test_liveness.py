"""The main loop's liveness: stalls, failures and calls that never return end the process."""

from __future__ import annotations

import threading

from starlette.testclient import TestClient

from millrace.health import WATCHDOG_EXIT, Liveness, health_app


def test_a_call_past_its_bound_is_a_problem_and_the_watchdog_exits():
    now = [0.0]
    liveness = Liveness(stall_after_s=100, clock=lambda: now[0])
    exited = threading.Event()
    codes: list[int] = []

    def exit_process(code: int) -> None:
        codes.append(code)
        exited.set()

    with liveness.bounded("the transaction's commit", 25):
        now[0] = 20.0
        assert liveness.problem() is None
        now[0] = 26.0
        assert liveness.problem() == "the transaction's commit did not return in time"
        assert liveness.status()["status"] == "stalled"
        liveness.start_watchdog(interval_s=0.01, exit_process=exit_process)
        assert exited.wait(5)
    assert codes == [WATCHDOG_EXIT]


def test_beats_keep_it_alive_and_a_failure_sticks():
    now = [0.0]
    liveness = Liveness(stall_after_s=10, clock=lambda: now[0])
    for t in range(0, 100, 5):
        now[0] = float(t)
        liveness.beat()
        assert liveness.problem() is None
    liveness.fail("fenced")
    liveness.beat()
    assert liveness.status() == {"status": "failed", "reason": "fenced"}


def test_health_app_answers_metrics_at_the_path_itself():
    """`curl host:port/metrics` as the README gives it: 200 with Prometheus text, no redirect."""
    client = TestClient(health_app(lambda: {"status": "ok"}), follow_redirects=False)
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.headers
    assert answer.headers["content-type"].startswith("text/plain")
    assert "python_info" in answer.text or "process_" in answer.text
    assert client.get("/health").json() == {"status": "ok"}
