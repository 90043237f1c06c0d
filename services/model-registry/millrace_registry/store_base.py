"""What the registry store's halves share: its errors, its transactions over the engine, and
reading one version."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import Row, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from millrace.errors import MillraceError
from millrace.registry_models import ModelVersion
from millrace_registry.schema import versions

T = TypeVar("T")


class NotFound(MillraceError, LookupError):
    pass


class Conflict(MillraceError, RuntimeError):
    pass


class StoreBase:
    engine: Engine

    def _upsert(self) -> Any:
        """The dialect's INSERT, which has ``on_conflict_do_update`` / ``_do_nothing``."""
        return postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as db:
            yield db

    def _read(self, work: Callable[[Connection], T]) -> T:
        with self.engine.connect() as db:
            return work(db)

    @staticmethod
    def _version(db: Connection, model: str, version: int) -> ModelVersion:
        row = db.execute(
            select(versions).where(versions.c.model == model, versions.c.version == version)
        ).first()
        if row is None:
            raise NotFound(f"model {model!r} has no version {version}")
        return _version_dict(row)


def _version_dict(row: Row[Any]) -> ModelVersion:
    info = row._asdict()
    info["archived"] = bool(info["archived"])
    return cast(ModelVersion, info)
