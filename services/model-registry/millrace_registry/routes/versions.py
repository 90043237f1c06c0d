"""Models and their versions: publish, list, read, archive, promote, prune."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, File, Form, Header, HTTPException, Query, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from millrace.http import problems
from millrace.json_values import JSON_INTEGER
from millrace.registry_models import AliasMove, ModelList, ModelVersion, Pruned, VersionPage
from millrace.signing import SIGNATURE_HEX_CHARS, BadSignature
from millrace_registry.deps import (
    MUTATING,
    NAME_PATTERN,
    PUBLISHED,
    READING,
    AnnounceDep,
    Authorized,
    ModelName,
    Readable,
    SettingsDep,
    StoreDep,
    VerifierDep,
    Version,
)

router = APIRouter(tags=["versions"], responses=problems(404, 413, 422))


class Promote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(default="production", pattern=NAME_PATTERN)
    reason: str = Field(default="", max_length=1000)


class Prune(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_last: Annotated[int, Field(ge=1, le=1_000_000), JSON_INTEGER]
    keep_history_moves: Annotated[int, Field(ge=0, le=1_000_000), JSON_INTEGER] = 20


def _metadata(text: str) -> dict[str, Any]:
    try:
        meta = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"metadata is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise HTTPException(422, "metadata must be a JSON object")
    return meta


PROMOTE_FIELD = (
    "an alias to move to the new version in the same call (as POST .../promote does); a replay "
    "of the idempotency key moves nothing"
)

# The form as it is meant: ``metadata`` is a JSON object sent as an application/json part
# (FastAPI can only describe a form field as text).
PUBLISH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["artifact", "signature"],
                    "properties": {
                        "artifact": {
                            "type": "string",
                            "contentMediaType": "application/octet-stream",
                        },
                        "signature": {
                            "type": "string",
                            "pattern": f"^[0-9a-f]{{{SIGNATURE_HEX_CHARS}}}$",
                            "description": "Ed25519 signature of the artifact's bytes, hex",
                        },
                        "metadata": {
                            "type": "object",
                            "description": "metrics, lineage, tags",
                        },
                        "promote": {
                            "type": "string",
                            "pattern": NAME_PATTERN,
                            "description": PROMOTE_FIELD,
                        },
                        "promote_reason": {"type": "string", "maxLength": 1000},
                    },
                },
                "encoding": {"metadata": {"contentType": "application/json"}},
            }
        },
    }
}


@router.get("/models", dependencies=Readable, responses=READING)
def list_models(store: StoreDep) -> ModelList:
    return {"models": store.list_models()}


@router.post(
    "/models/{name}/versions",
    status_code=201,
    dependencies=Authorized,
    responses={**MUTATING, 200: {"description": "a replay: the version this key made"}},
    openapi_extra=PUBLISH_BODY,
)
def publish(
    name: ModelName,
    store: StoreDep,
    settings: SettingsDep,
    verifier: VerifierDep,
    announce: AnnounceDep,
    response: Response,
    artifact: Annotated[UploadFile, File(description="the model artifact")],
    signature: Annotated[
        str,
        Form(
            pattern=rf"^[0-9a-f]{{{SIGNATURE_HEX_CHARS}}}$",
            description="Ed25519 signature of the artifact's bytes, hex",
        ),
    ],
    metadata: Annotated[str, Form(description="a JSON object: metrics, lineage, tags")] = "{}",
    promote: Annotated[str | None, Form(pattern=NAME_PATTERN, description=PROMOTE_FIELD)] = None,
    promote_reason: Annotated[str, Form(max_length=1000)] = "",
    idempotency_key: Annotated[
        str | None,
        Header(
            pattern=r"^[A-Za-z0-9._:-]{1,128}$",
            description="the same key again returns the version it first made (200)",
        ),
    ] = None,
) -> ModelVersion:
    """Publish a version (and, with ``promote``, move that alias to it: one call where a
    trainer publishing every version would make two). A plain ``def``: hashing, verifying and
    writing run in the worker threads, never on the event loop."""
    data = artifact.file.read()
    meta = _metadata(metadata)
    if verifier is not None:
        try:
            verifier.verify(data, signature)
        except BadSignature:
            raise HTTPException(403, "the artifact's signature does not verify") from None
    published, created = store.publish(name, data, signature, meta, idempotency_key)
    if not created:
        response.status_code = 200
        return published
    PUBLISHED.inc()
    if promote is not None:
        announce(store.promote(name, promote, published["version"], "api", promote_reason))
    if settings.retain_versions:
        store.prune(name, settings.retain_versions, settings.retain_history_moves)
    return published


@router.get("/models/{name}/versions", dependencies=Readable, responses=READING)
def list_versions(
    name: ModelName,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
    tag: Annotated[
        str | None, Query(pattern=r"^[^:]{1,64}:.{0,200}$", description="name:value")
    ] = None,
    include_archived: bool = False,
) -> VersionPage:
    wanted = (tag.partition(":")[0], tag.partition(":")[2]) if tag else None
    items, total = store.list_versions(name, limit, offset, wanted, include_archived)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/models/{name}/versions/{version}", dependencies=Readable, responses=READING)
def get_version(name: ModelName, version: Version, store: StoreDep) -> ModelVersion:
    return store.get_version(name, version)


@router.get(
    "/models/{name}/versions/{version}/artifact",
    dependencies=Readable,
    response_class=Response,
    responses={
        **READING,
        200: {"content": {"application/octet-stream": {}}, "description": "the artifact"},
    },
)
def get_artifact(name: ModelName, version: Version, store: StoreDep) -> Response:
    data, info = store.read_artifact(name, version)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"X-Millrace-Sha256": info["sha256"], "X-Millrace-Signature": info["signature"]},
    )


@router.delete("/models/{name}/versions/{version}", dependencies=Authorized, responses=MUTATING)
def archive_version(name: ModelName, version: Version, store: StoreDep) -> ModelVersion:
    """Archive a version (hidden from listings; 409 while an alias points at it)."""
    return store.archive(name, version)


@router.post(
    "/models/{name}/versions/{version}/promote", dependencies=Authorized, responses=MUTATING
)
def promote(
    name: ModelName, version: Version, body: Promote, store: StoreDep, announce: AnnounceDep
) -> AliasMove:
    return announce(store.promote(name, body.alias, version, "api", body.reason))


@router.post("/models/{name}/prune", dependencies=Authorized, responses=MUTATING)
def prune(name: ModelName, body: Prune, store: StoreDep) -> Pruned:
    """Apply the retention policy now; returns the deleted version numbers."""
    return {"deleted": store.prune(name, body.keep_last, body.keep_history_moves)}
