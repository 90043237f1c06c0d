"""Health and Prometheus metrics for the services that have no web app of their own, a way to
run any ASGI app in a background thread (the same uvicorn the HTTP services run on), and the
liveness of a service's main loop."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from millrace.errors import ServiceFailed
from millrace.waiting import wait_until

__all__ = [
    "WATCHDOG_EXIT",
    "BackgroundServer",
    "Liveness",
    "ServiceFailed",
    "StatusFn",
    "health_app",
    "run_supervised",
    "serve_health",
]

StatusFn = Callable[[], dict[str, Any]]
log = logging.getLogger(__name__)
#: The exit status of a process its watchdog ended (EX_SOFTWARE).
WATCHDOG_EXIT = 70


class Liveness:
    """Whether a main loop still makes progress.

    The loop calls :meth:`beat` after every pass that got somewhere (a committed batch, or an
    idle poll: nothing to do is not a stall) and :meth:`check` at the top of every pass.
    ``/health`` turns 503 once :meth:`fail` was called or no beat came for ``stall_after_s``;
    :meth:`check` then raises :class:`ServiceFailed`, so a loop that spins on the same error
    ends instead of looking healthy forever.

    >>> clock = iter([0.0, 5.0, 31.0]).__next__
    >>> liveness = Liveness(stall_after_s=30, clock=clock)
    >>> liveness.status()["status"]
    'ok'
    >>> liveness.status()["status"]
    'stalled'
    """

    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._last_beat = clock()
        self.failure: str | None = None
        #: (what, deadline) of the client call in progress, if bounded.
        self._call: tuple[str, float] | None = None

    @contextmanager
    def bounded(self, what: str, limit_s: float) -> Iterator[None]:
        """A client call that must return within ``limit_s``: some cannot be trusted to honour
        their own timeout (librdkafka's ``send_offsets_to_transaction`` may block for good once
        its group coordinator went away: confluentinc/librdkafka#5456). Past the limit the
        problem is reported, and :meth:`start_watchdog` ends the process."""
        self._call = (what, self._clock() + limit_s)
        try:
            yield
        finally:
            self._call = None

    def beat(self) -> None:
        self._last_beat = self._clock()

    def fail(self, reason: str) -> None:
        self.failure = reason

    def problem(self) -> str | None:
        """Why the loop is not healthy, or None."""
        if self.failure is not None:
            return self.failure
        call = self._call
        if call is not None and self._clock() > call[1]:
            return f"{call[0]} did not return in time"
        idle = self._clock() - self._last_beat
        if idle > self.stall_after_s:
            return f"no progress for {idle:.0f} s (limit {self.stall_after_s:g} s)"
        return None

    def check(self) -> None:
        problem = self.problem()
        if problem is not None:
            self.fail(problem)
            raise ServiceFailed(problem)

    def start_watchdog(
        self, interval_s: float = 0.5, exit_process: Callable[[int], object] = os._exit
    ) -> threading.Thread:
        """A thread that ends the process once :meth:`problem` reports one: the main loop may
        be stuck inside a call that never returns, where it cannot raise."""

        def watch() -> None:
            while True:
                time.sleep(interval_s)
                problem = self.problem()
                if problem is not None:
                    log.critical("exiting for a restart", extra={"reason": problem})
                    logging.shutdown()
                    exit_process(WATCHDOG_EXIT)
                    return

        thread = threading.Thread(target=watch, name="watchdog", daemon=True)
        thread.start()
        return thread

    def status(self, **details: Any) -> dict[str, Any]:
        problem = self.problem()
        if problem is None:
            return {"status": "ok", **details}
        return {"status": "failed" if self.failure else "stalled", "reason": problem, **details}


def metrics_response() -> Response:
    """This process's Prometheus metrics, in the text format (every service's ``/metrics``)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def health_app(status: StatusFn) -> Starlette:
    """``/health`` (200 while ``status()['status'] == 'ok'``, else 503) and ``/metrics``."""

    async def health(_request: Request) -> JSONResponse:
        body = status()
        return JSONResponse(body, status_code=200 if body.get("status") == "ok" else 503)

    async def metrics(_request: Request) -> Response:
        return metrics_response()

    # A route, not a mounted app: a mount answers /metrics with a redirect to /metrics/.
    return Starlette(routes=[Route("/health", health), Route("/metrics", metrics)])


class BackgroundServer:
    """An ASGI app served by uvicorn from a daemon thread (lifespan included)."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None))
        self.thread = threading.Thread(target=self.server.run, name=f"http-{port}", daemon=True)
        self.where = f"{host}:{port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        """Start serving; returns once the socket listens."""
        self.thread.start()
        wait_until(lambda: self.server.started, timeout, f"the HTTP server on {self.where}", 0.05)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait until the socket is released."""
        self.server.should_exit = True
        self.thread.join(timeout)


def run_supervised(run: Callable[[], None], liveness: Liveness, service: str) -> None:
    """A service's main loop under its watchdog; on :class:`ServiceFailed` the process exits
    non-zero, so that its supervisor restarts it."""
    liveness.start_watchdog()
    try:
        run()
    except ServiceFailed as exc:
        log.critical(f"{service} cannot go on; exiting for a restart", extra={"reason": str(exc)})
        raise SystemExit(1) from exc


def serve_health(host: str, port: int, status: StatusFn) -> BackgroundServer:
    return BackgroundServer(health_app(status), host, port).start()
