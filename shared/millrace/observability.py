"""Health and Prometheus metrics over HTTP for the services that have no web app of their own."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

StatusFn = Callable[[], dict[str, Any]]


def serve_health(host: str, port: int, status: StatusFn) -> ThreadingHTTPServer:
    """Serve ``/health`` (200 while ``status()['status'] == 'ok'``, else 503) and ``/metrics``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path in ("/health", "/healthz"):
                body = status()
                code = 200 if body.get("status") == "ok" else 503
                self._send(code, orjson.dumps(body), "application/json")
            else:
                self._send(404, b'{"detail": "not found"}', "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
