"""Aliases: read, move by compare-and-set, history, rollback. Every move is announced."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from millrace.http import problems
from millrace.json_values import JSON_INTEGER
from millrace.registry_models import Alias, AliasList, AliasMove, MoveHistory
from millrace_registry.deps import (
    MUTATING,
    NAME_PATTERN,
    READING,
    AliasName,
    AnnounceDep,
    Authorized,
    ModelName,
    Readable,
    StoreDep,
)

VersionNumber = Annotated[int, Field(ge=1, le=2**53), JSON_INTEGER]

router = APIRouter(tags=["aliases"], responses=problems(404, 413, 422))


class AliasUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: VersionNumber
    expected_version: VersionNumber | None = Field(
        description="the version the alias must point at now (null: unset)"
    )
    reason: str = Field(default="", max_length=1000)


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(default="production", pattern=NAME_PATTERN)
    to_version: VersionNumber | None = None
    reason: str = Field(default="", max_length=1000)


@router.get("/models/{name}/aliases", dependencies=Readable, responses=READING)
def list_aliases(name: ModelName, store: StoreDep) -> AliasList:
    """Every alias of the model and the version it points at."""
    return {"items": store.list_aliases(name)}


@router.get("/models/{name}/aliases/{alias}", dependencies=Readable, responses=READING)
def get_alias(name: ModelName, alias: AliasName, store: StoreDep) -> Alias:
    return store.get_alias(name, alias)


@router.put("/models/{name}/aliases/{alias}", dependencies=Authorized, responses=MUTATING)
def move_alias(
    name: ModelName, alias: AliasName, body: AliasUpdate, store: StoreDep, announce: AnnounceDep
) -> AliasMove:
    move = store.move_alias(name, alias, body.version, body.expected_version, "api", body.reason)
    return announce(move)


@router.get("/models/{name}/aliases/{alias}/history", dependencies=Readable, responses=READING)
def alias_history(
    name: ModelName,
    alias: AliasName,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> MoveHistory:
    return {"items": store.history(name, alias, limit)}


@router.post("/models/{name}/rollback", dependencies=Authorized, responses=MUTATING)
def rollback(name: ModelName, body: Rollback, store: StoreDep, announce: AnnounceDep) -> AliasMove:
    move = store.rollback(name, body.alias, body.to_version, "api", body.reason or "rollback")
    return announce(move)
