"""Health and Prometheus metrics for the services that have no web app of their own, a way to
run any ASGI app in a background thread (the same uvicorn the HTTP services run on), and the
liveness of a service's main loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from millrace.waiting import wait_until

StatusFn = Callable[[], dict[str, Any]]


class ServiceFailed(RuntimeError):
    """The main loop cannot go on (a fatal client error, or no progress for too long); the
    process exits non-zero so that its supervisor restarts it."""


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

    def beat(self) -> None:
        self._last_beat = self._clock()

    def fail(self, reason: str) -> None:
        self.failure = reason

    def problem(self) -> str | None:
        """Why the loop is not healthy, or None."""
        if self.failure is not None:
            return self.failure
        idle = self._clock() - self._last_beat
        if idle > self.stall_after_s:
            return f"no progress for {idle:.0f} s (limit {self.stall_after_s:g} s)"
        return None

    def check(self) -> None:
        problem = self.problem()
        if problem is not None:
            self.fail(problem)
            raise ServiceFailed(problem)

    def status(self, **details: Any) -> dict[str, Any]:
        problem = self.problem()
        if problem is None:
            return {"status": "ok", **details}
        return {"status": "failed" if self.failure else "stalled", "reason": problem, **details}


def health_app(status: StatusFn) -> Starlette:
    """``/health`` (200 while ``status()['status'] == 'ok'``, else 503) and ``/metrics``."""

    async def health(_request: Request) -> JSONResponse:
        body = status()
        return JSONResponse(body, status_code=200 if body.get("status") == "ok" else 503)

    return Starlette(routes=[Route("/health", health), Mount("/metrics", make_asgi_app())])


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


def serve_health(host: str, port: int, status: StatusFn) -> BackgroundServer:
    return BackgroundServer(health_app(status), host, port).start()
