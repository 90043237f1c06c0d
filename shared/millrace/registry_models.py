"""The registry's answers, defined once: what the store returns, what the routes declare as
their response models (and so what the OpenAPI schema publishes), and what the client hands
out after validating each answer against them.

They are ``TypedDict``s: plain dicts at run time (no copy between the store and the JSON
encoder), typed for mypy, validated by pydantic where bytes cross the wire.
"""

from __future__ import annotations

from typing import Any, Literal

# pydantic validates a TypedDict only from typing_extensions before Python 3.12.
from typing_extensions import TypedDict

#: How an alias came to move: by compare-and-set, a promotion, a rollback.
MoveKind = Literal["move", "promote", "rollback"]


class ModelVersion(TypedDict):
    model: str
    version: int
    #: sha256 of the artifact's bytes, hex.
    sha256: str
    #: Ed25519 signature of the artifact's bytes (the trainer's key), hex.
    signature: str
    size: int
    #: What the publisher attached: metrics, lineage, tags.
    metadata: dict[str, Any]
    created_at: float
    #: Hidden from listings (the artifact stays for history and rollback).
    archived: bool


class VersionPage(TypedDict):
    items: list[ModelVersion]
    total: int
    limit: int
    offset: int


class Alias(TypedDict):
    model: str
    alias: str
    version: int
    updated_at: float
    #: The alias's sequence number: its number of moves so far.
    seq: int


class AliasList(TypedDict):
    items: list[Alias]


class AliasMove(TypedDict):
    id: int
    model: str
    alias: str
    from_version: int | None
    to_version: int
    kind: MoveKind
    actor: str
    reason: str
    at: float
    #: The alias's sequence number after this move (1 for its first).
    seq: int


class MoveHistory(TypedDict):
    items: list[AliasMove]


class ModelList(TypedDict):
    models: list[str]


class Pruned(TypedDict):
    #: The version numbers the retention policy deleted.
    deleted: list[int]
