"""A service that starts before Redis says so, with the address and the setting that names it,
and goes on once Redis answers; one that never answers is a clear TimeoutError."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from millrace import waiting
from millrace.state import RedisState
from millrace_stack.brokers import RedisNode
from millrace_stack.processes import ProcessTable, free_port

pytestmark = pytest.mark.integration


def test_state_waits_for_a_late_redis_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(waiting, "ANNOUNCE_EVERY_S", 0.3)
    port = free_port()
    state = RedisState.from_url(f"redis://127.0.0.1:{port}/0", "t.")
    procs = ProcessTable(tmp_path)
    late = threading.Timer(1.5, RedisNode(tmp_path / "redis", port).start, args=(procs,))
    late.start()
    try:
        with caplog.at_level(logging.WARNING, logger="millrace.waiting"):
            state.wait_ready(timeout=30)
        assert state.client.ping()
    finally:
        late.join()
        procs.stop("redis")
    said = [r.getMessage() for r in caplog.records]
    expected = f"waiting for Redis at 127.0.0.1:{port} (set by MILLRACE_REDIS_URL)"
    assert said and set(said) == {expected}
    assert len(said) >= 2, "said again while the wait went on"


def test_state_names_the_address_when_redis_never_answers():
    port = free_port()
    state = RedisState.from_url(f"redis://127.0.0.1:{port}/0", "t.")
    with pytest.raises(TimeoutError, match=f"Redis at 127.0.0.1:{port} not ready after 1 s"):
        state.wait_ready(timeout=1)
