"""HTTP pieces the services share: the error contract and the body size limit.

Every error answer is ``{"detail": "<reason>"}`` (:class:`Problem`), validation errors included,
and every status an operation can answer is in its OpenAPI document (:func:`problems`), so that
``schemathesis run --checks all`` finds the schema and the behaviour in agreement.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MEANINGS = {
    400: "the body could not be parsed",
    401: "no bearer token",
    403: "the token, or the artifact's signature, is not valid",
    404: "no such model, version or alias",
    409: "a conflict with the current state (compare-and-set, an aliased version)",
    413: "the request body is too large",
    422: "the request is not valid; the reason says why",
    503: "not ready yet",
}


class Problem(BaseModel):
    """Every error answer: a short reason, safe to show."""

    detail: str


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each a :class:`Problem`."""
    return {code: {"model": Problem, "description": _MEANINGS[code]} for code in codes}


def describe_errors(errors: Any, whole: str = "request") -> str:
    """The first three of pydantic's errors as one line: ``where: what; ...``."""
    parts = []
    for item in list(errors)[:3]:
        where = ".".join(str(p) for p in item.get("loc", ())) or whole
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or f"invalid {whole}"


def install_error_contract(app: FastAPI) -> None:
    """Validation errors as one-line reasons, and 405 answers whose ``Allow`` lists every method
    the path has (Starlette names only the first route's)."""

    async def invalid(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        reason = describe_errors(exc.errors(), "request")
        return JSONResponse({"detail": reason}, status_code=422)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match != Match.NONE and route_methods:
            methods.update(route_methods)
    return sorted(methods)


class BodySizeLimit:
    """Answer 413 when a request body exceeds ``max_bytes``: at once from ``Content-Length``,
    or as soon as a chunked body has delivered more than the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await _reject(send)
            return
        received = 0
        started = rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer now and tell the app the client left; whatever it sends is dropped.
                    rejected = True
                    if not started:
                        await _reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(ClientDisconnect):
            await self.app(scope, limited_receive, guarded_send)


async def _reject(send: Send) -> None:
    body: Any = orjson.dumps({"detail": "request body too large"})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
