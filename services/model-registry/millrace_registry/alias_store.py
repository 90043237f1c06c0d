"""Alias moves: compare-and-set in one statement (``UPDATE ... WHERE version = expected``, or
an insert that conflicts when the alias exists), an alias history that is never rewritten, and a
per-alias sequence number from the same transaction, so followers apply a move only if its
number is above the one they hold."""

from __future__ import annotations

import time
from typing import cast

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from millrace.registry_models import Alias, AliasMove, MoveKind
from millrace_registry.schema import alias_history, aliases
from millrace_registry.store_base import Conflict, NotFound, StoreBase


class AliasMoves(StoreBase):
    def get_alias(self, model: str, alias: str) -> Alias:
        row = self._read(
            lambda db: db.execute(
                select(aliases).where(aliases.c.model == model, aliases.c.alias == alias)
            ).first()
        )
        if row is None:
            raise NotFound(f"model {model!r} has no alias {alias!r}")
        return cast(Alias, row._asdict())

    def list_aliases(self, model: str) -> list[Alias]:
        rows = self._read(
            lambda db: db.execute(
                select(aliases).where(aliases.c.model == model).order_by(aliases.c.alias)
            ).all()
        )
        return [cast(Alias, r._asdict()) for r in rows]

    def move_alias(
        self,
        model: str,
        alias: str,
        version: int,
        expected: int | None,
        actor: str,
        reason: str,
        kind: MoveKind = "move",
    ) -> AliasMove:
        """Point ``alias`` at ``version`` if it currently points at ``expected`` (None = unset)."""
        with self._tx() as db:
            return self._move(db, model, alias, version, expected, actor, reason, kind)

    def _move(
        self,
        db: Connection,
        model: str,
        alias: str,
        version: int,
        expected: int | None,
        actor: str,
        reason: str,
        kind: MoveKind,
    ) -> AliasMove:
        """The compare-and-set, decided by the database in one statement: on PostgreSQL a
        concurrent move of the same alias waits for this one, then finds the version it
        expected gone and changes no row."""
        self._version(db, model, version)  # NotFound
        now = time.time()
        if expected is None:
            first = self._upsert()(aliases).values(
                model=model, alias=alias, version=version, updated_at=now, seq=1
            )
            moved = db.execute(
                first.on_conflict_do_nothing(index_elements=["model", "alias"]).returning(
                    aliases.c.seq
                )
            ).scalar()
        else:
            moved = db.execute(
                update(aliases)
                .where(
                    aliases.c.model == model,
                    aliases.c.alias == alias,
                    aliases.c.version == expected,
                )
                .values(version=version, updated_at=now, seq=aliases.c.seq + 1)
                .returning(aliases.c.seq)
            ).scalar()
        if moved is None:
            current = self._current(db, model, alias)
            raise Conflict(f"alias {alias!r} points at {current}, not {expected}")
        seq = int(moved)
        move_id = db.execute(
            insert(alias_history)
            .values(
                model=model,
                alias=alias,
                from_version=expected,
                to_version=version,
                kind=kind,
                actor=actor,
                reason=reason,
                at=now,
                seq=seq,
            )
            .returning(alias_history.c.id)
        ).scalar_one()
        return AliasMove(
            id=int(move_id),
            model=model,
            alias=alias,
            from_version=expected,
            to_version=version,
            kind=kind,
            actor=actor,
            reason=reason,
            at=now,
            seq=seq,
        )

    @staticmethod
    def _current(db: Connection, model: str, alias: str, lock: bool = False) -> int | None:
        query = select(aliases.c.version).where(aliases.c.model == model, aliases.c.alias == alias)
        found = db.execute(query.with_for_update() if lock else query).scalar()
        return None if found is None else int(found)

    def promote(self, model: str, alias: str, version: int, actor: str, reason: str) -> AliasMove:
        """Point ``alias`` at ``version`` from whatever it points at now (one transaction; the
        alias row locked, so the move is not lost to a concurrent one)."""
        with self._tx() as db:
            current = self._current(db, model, alias, lock=True)
            return self._move(db, model, alias, version, current, actor, reason, "promote")

    def rollback(
        self, model: str, alias: str, to_version: int | None, actor: str, reason: str
    ) -> AliasMove:
        """Move ``alias`` back: to ``to_version``, or to the version it had before the current
        one was put there by a forward move (so repeated rollbacks keep walking back)."""
        with self._tx() as db:
            current = self._current(db, model, alias, lock=True)
            if current is None:
                raise NotFound(f"model {model!r} has no alias {alias!r}")
            target = (
                to_version if to_version is not None else self._previous(db, model, alias, current)
            )
            if target == current:
                raise Conflict(f"alias {alias!r} already points at {current}")
            return self._move(db, model, alias, target, current, actor, reason, "rollback")

    @staticmethod
    def _previous(db: Connection, model: str, alias: str, current: int) -> int:
        h = alias_history.c
        found = db.execute(
            select(h.from_version)
            .where(
                h.model == model,
                h.alias == alias,
                h.to_version == current,
                h.kind != "rollback",
                h.from_version.is_not(None),
            )
            .order_by(h.id.desc())
            .limit(1)
        ).scalar()
        if found is None:
            raise Conflict(f"alias {alias!r} has no earlier version to roll back to")
        return int(found)

    def history(self, model: str, alias: str, limit: int) -> list[AliasMove]:
        h = alias_history.c
        rows = self._read(
            lambda db: db.execute(
                select(alias_history)
                .where(h.model == model, h.alias == alias)
                .order_by(h.id.desc())
                .limit(limit)
            ).all()
        )
        return [cast(AliasMove, r._asdict()) for r in rows]
