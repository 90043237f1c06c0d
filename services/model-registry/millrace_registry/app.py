"""The registry's HTTP API (OpenAPI at /docs). Mutating calls need ``Authorization: Bearer``."""

from __future__ import annotations

import hmac
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import (
    Depends,
    FastAPI,
    File,
    Form,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    UploadFile,
)
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from millrace.artifacts import sign
from millrace.http import BodySizeLimit
from millrace.model_events import ModelEventPublisher
from millrace_registry.settings import RegistrySettings
from millrace_registry.store import AliasMove, Conflict, NotFound, RegistryStore

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)

ModelName = Annotated[str, Field(pattern=NAME_PATTERN)]


class AliasUpdate(BaseModel):
    version: int = Field(ge=1, le=2**53)
    expected_version: int | None = Field(
        description="the version the alias must point at now (null: unset)"
    )
    reason: str = Field(default="", max_length=1000)


class Promote(BaseModel):
    alias: str = Field(default="production", pattern=NAME_PATTERN)
    reason: str = Field(default="", max_length=1000)


class Prune(BaseModel):
    keep_last: int = Field(ge=1, le=1_000_000)
    keep_history_moves: int = Field(default=20, ge=0, le=1_000_000)


class Rollback(BaseModel):
    alias: str = Field(default="production", pattern=NAME_PATTERN)
    to_version: int | None = Field(default=None, ge=1, le=2**53)
    reason: str = Field(default="", max_length=1000)


def create_app(settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or RegistrySettings()
    store = RegistryStore(settings.data_dir)
    publisher: ModelEventPublisher | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal publisher
        if settings.announce:
            publisher = ModelEventPublisher(settings.kafka_bootstrap, settings.model_events_topic)
        yield
        if publisher is not None:
            publisher.close()
            publisher = None

    app = FastAPI(title="Millrace model registry", version="1", lifespan=lifespan)
    app.state.store = store

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    def require_token(authorization: Annotated[str | None, Header()] = None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(
                401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(authorization[7:].encode(), settings.registry_token.encode()):
            raise HTTPException(403, "the token is not valid")
        return "token"

    def check_name(name: str, what: str = "model") -> str:
        if not _NAME.match(name):
            raise HTTPException(422, f"invalid {what} name: use letters, digits, '.', '_', '-'")
        return name

    def announce(move: AliasMove) -> None:
        if publisher is not None:
            publisher.announce(move.as_dict())

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "models": len(store.list_models())}

    @app.get("/models")
    def list_models() -> dict[str, list[str]]:
        return {"models": store.list_models()}

    @app.post("/models/{name}/versions", status_code=201, dependencies=[Depends(require_token)])
    async def publish(
        name: str,
        artifact: Annotated[UploadFile, File(description="the model artifact")],
        signature: Annotated[str, Form(pattern=r"^[0-9a-f]{64}$")],
        metadata: Annotated[str, Form(description="JSON object: metrics, lineage, tags")] = "{}",
    ) -> dict[str, Any]:
        check_name(name)
        data = await artifact.read()
        try:
            meta = orjson.loads(metadata)
        except orjson.JSONDecodeError as exc:
            raise HTTPException(422, f"metadata is not JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise HTTPException(422, "metadata must be a JSON object")
        if settings.verify_signatures and not hmac.compare_digest(
            sign(data, settings.signing_key), signature
        ):
            raise HTTPException(422, "artifact signature does not verify")
        published = store.publish(name, data, signature, meta)
        if settings.retain_versions:
            store.prune(name, settings.retain_versions, settings.retain_history_moves)
        return published

    @app.get("/models/{name}/versions")
    def list_versions(
        name: str,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
        tag: Annotated[
            str | None, Query(pattern=r"^[^:]{1,64}:.{0,200}$", description="name:value")
        ] = None,
        include_archived: bool = False,
    ) -> dict[str, Any]:
        wanted = (tag.partition(":")[0], tag.partition(":")[2]) if tag else None
        items, total = store.list_versions(
            check_name(name), limit, offset, wanted, include_archived
        )
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    @app.delete("/models/{name}/versions/{version}", dependencies=[Depends(require_token)])
    def archive_version(name: str, version: Annotated[int, Path(ge=1, le=2**53)]) -> dict[str, Any]:
        """Archive a version (hidden from listings; 409 while an alias points at it)."""
        return store.archive(check_name(name), version)

    @app.post("/models/{name}/versions/{version}/promote", dependencies=[Depends(require_token)])
    def promote(
        name: str, version: Annotated[int, Path(ge=1, le=2**53)], body: Promote
    ) -> dict[str, Any]:
        move = store.promote(check_name(name), body.alias, version, "api", body.reason)
        announce(move)
        return move.as_dict()

    @app.post("/models/{name}/prune", dependencies=[Depends(require_token)])
    def prune(name: str, body: Prune) -> dict[str, list[int]]:
        """Apply the retention policy now; returns the deleted version numbers."""
        return {"deleted": store.prune(check_name(name), body.keep_last, body.keep_history_moves)}

    @app.get("/models/{name}/versions/{version}")
    def get_version(name: str, version: Annotated[int, Path(ge=1, le=2**53)]) -> dict[str, Any]:
        return store.get_version(check_name(name), version)

    @app.get("/models/{name}/versions/{version}/artifact")
    def get_artifact(name: str, version: Annotated[int, Path(ge=1, le=2**53)]) -> Response:
        data, info = store.read_artifact(check_name(name), version)
        return Response(
            data,
            media_type="application/octet-stream",
            headers={
                "X-Millrace-Sha256": info["sha256"],
                "X-Millrace-Signature": info["signature"],
            },
        )

    @app.get("/models/{name}/aliases/{alias}")
    def get_alias(name: str, alias: str) -> dict[str, Any]:
        return store.get_alias(check_name(name), check_name(alias, "alias"))

    @app.put("/models/{name}/aliases/{alias}", dependencies=[Depends(require_token)])
    def move_alias(name: str, alias: str, body: AliasUpdate) -> dict[str, Any]:
        move = store.move_alias(
            check_name(name),
            check_name(alias, "alias"),
            body.version,
            body.expected_version,
            "api",
            body.reason,
        )
        announce(move)
        return move.as_dict()

    @app.get("/models/{name}/aliases/{alias}/history")
    def alias_history(
        name: str, alias: str, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> dict[str, Any]:
        moves = store.history(check_name(name), check_name(alias, "alias"), limit)
        return {"items": [m.as_dict() for m in moves]}

    @app.post("/models/{name}/rollback", dependencies=[Depends(require_token)])
    def rollback(name: str, body: Rollback) -> dict[str, Any]:
        move = store.rollback(
            check_name(name), body.alias, body.to_version, "api", body.reason or "rollback"
        )
        announce(move)
        return move.as_dict()

    return app
