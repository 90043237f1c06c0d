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


def serve_in_thread(app: ASGIApp, host: str, port: int, timeout: float = 30.0) -> uvicorn.Server:
    """Serve ``app`` on ``host:port`` from a daemon thread (its lifespan included); returns once
    it listens. Set ``should_exit`` on the result to stop it."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None))
    threading.Thread(target=server.run, name=f"http-{port}", daemon=True).start()
    wait_until(lambda: server.started, timeout, f"the HTTP server on {host}:{port}", 0.05)
    return server


def serve_health(host: str, port: int, status: StatusFn) -> uvicorn.Server:
    return serve_in_thread(health_app(status), host, port)
