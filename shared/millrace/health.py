"""Health and Prometheus metrics for the services that have no web app of their own, and a way
to run any ASGI app in a background thread (the same uvicorn the HTTP services run on)."""

from __future__ import annotations

import threading
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
