"""The registry's embedded store: SQLite (WAL) for metadata, a content-addressed artifact folder.

Version numbers come from a per-model counter inside one ``BEGIN IMMEDIATE`` transaction, so
concurrent publishers get unique, gapless numbers, and a number is never handed out twice even
after retention pruned old versions. A publish may carry an idempotency key: the same key again
returns the version it first made, so a client may retry a publish whose answer it lost.
Artifact files are written and unlinked under the same lock as the rows that reference them, so a
publish of bytes identical to a version being pruned never loses its file.

Alias moves are compare-and-set, append to an alias history that is never rewritten, and carry a
per-alias sequence number from the same transaction: followers apply a move only if its number
is above the one they hold, so late or reordered announcements cannot move them backwards.
Retention never removes a version an alias points at or one the last N alias moves reference.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import orjson

from millrace.artifacts import sha256_hex
from millrace.errors import MillraceError
from millrace.registry_models import Alias, AliasMove, ModelVersion, MoveKind

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL,
    signature TEXT NOT NULL, size INTEGER NOT NULL, metadata TEXT NOT NULL,
    created_at REAL NOT NULL, archived INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model, version));
CREATE TABLE IF NOT EXISTS version_counters (
    model TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS aliases (
    model TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
    updated_at REAL NOT NULL, seq INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (model, alias));
CREATE TABLE IF NOT EXISTS alias_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, alias TEXT NOT NULL,
    from_version INTEGER, to_version INTEGER NOT NULL, kind TEXT NOT NULL,
    actor TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS publish_keys (
    model TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (model, key));
CREATE INDEX IF NOT EXISTS alias_history_by_alias ON alias_history (model, alias, id);
CREATE INDEX IF NOT EXISTS versions_by_sha ON versions (sha256);
"""


class NotFound(MillraceError, LookupError):
    pass


class Conflict(MillraceError, RuntimeError):
    pass


class RegistryStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = root / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            root / "registry.db", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._migrate()
        # Reentrant: prune holds it across its transaction and the unlinking of orphan files.
        self._lock = threading.RLock()

    def _migrate(self) -> None:
        """Add the columns a store made by an earlier release lacks."""
        for table in ("aliases", "alias_history"):
            columns = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if "seq" not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- versions -------------------------------------------------------------------------

    def publish(
        self,
        model: str,
        artifact: bytes,
        signature: str,
        metadata: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> tuple[ModelVersion, bool]:
        """(the version, True if this call created it). With ``idempotency_key``, a key seen
        before returns the version it made (:class:`Conflict` if the bytes differ)."""
        digest = sha256_hex(artifact)
        with self._tx() as db:
            if idempotency_key is not None:
                seen = db.execute(
                    "SELECT version, sha256 FROM publish_keys WHERE model = ? AND key = ?",
                    (model, idempotency_key),
                ).fetchone()
                if seen is not None:
                    if seen[1] != digest:
                        raise Conflict("this idempotency key was used to publish other bytes")
                    return self.get_version(model, int(seen[0])), False
            row = db.execute(
                "INSERT INTO version_counters VALUES (?, 1) ON CONFLICT (model) "
                "DO UPDATE SET last_version = last_version + 1 RETURNING last_version",
                (model,),
            ).fetchone()
            version = int(row[0])
            db.execute(
                "INSERT INTO versions (model, version, sha256, signature, size, metadata, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    model,
                    version,
                    digest,
                    signature,
                    len(artifact),
                    orjson.dumps(metadata).decode(),
                    time.time(),
                ),
            )
            if idempotency_key is not None:
                db.execute(
                    "INSERT INTO publish_keys VALUES (?, ?, ?, ?)",
                    (model, idempotency_key, version, digest),
                )
            # Under the lock, so a concurrent prune cannot unlink the file between the check
            # that it exists and the commit that references it.
            self._write_artifact(digest, artifact)
        return self.get_version(model, version), True

    def _write_artifact(self, digest: str, data: bytes) -> None:
        path = self.artifact_path(digest)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def artifact_path(self, digest: str) -> Path:
        return self.artifacts / digest[:2] / digest

    def _one(self, missing: str, sql: str, *args: object) -> sqlite3.Row:
        """The one row ``sql`` selects, or :class:`NotFound` with ``missing`` as the reason."""
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(sql, args).fetchone()
        if row is None:
            raise NotFound(missing)
        return row

    def get_version(self, model: str, version: int) -> ModelVersion:
        row = self._one(
            f"model {model!r} has no version {version}",
            "SELECT * FROM versions WHERE model = ? AND version = ?",
            model,
            version,
        )
        return _version_dict(row)

    def list_versions(
        self,
        model: str,
        limit: int,
        offset: int,
        tag: tuple[str, str] | None = None,
        include_archived: bool = False,
    ) -> tuple[list[ModelVersion], int]:
        """Newest first; ``tag=(name, value)`` keeps versions whose ``metadata.tags`` match."""
        where = "model = ?"
        args: list[object] = [model]
        if not include_archived:
            where += " AND archived = 0"
        if tag is not None:
            where += " AND json_extract(metadata, '$.tags.' || json_quote(?)) = ?"
            args += list(tag)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM versions WHERE {where} ORDER BY version DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            total = self._db.execute(
                f"SELECT COUNT(*) FROM versions WHERE {where}", args
            ).fetchone()[0]
        return [_version_dict(r) for r in rows], total

    def list_models(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT model FROM versions ORDER BY model").fetchall()
        return [r[0] for r in rows]

    def read_artifact(self, model: str, version: int) -> tuple[bytes, ModelVersion]:
        info = self.get_version(model, version)
        return self.artifact_path(info["sha256"]).read_bytes(), info

    def archive(self, model: str, version: int) -> ModelVersion:
        """Hide a version from listings (its artifact stays for history and rollback)."""
        with self._tx() as db:
            self._refuse_if_aliased(db, model, version)
            cursor = db.execute(
                "UPDATE versions SET archived = 1 WHERE model = ? AND version = ?", (model, version)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"model {model!r} has no version {version}")
        return self.get_version(model, version)

    def prune(self, model: str, keep_last: int, keep_history_moves: int = 20) -> list[int]:
        """Delete versions beyond the newest ``keep_last``, except those an alias points at or
        the last ``keep_history_moves`` alias moves reference; returns the deleted numbers."""
        with self._lock:
            with self._tx() as db:
                deleted, orphans = self._delete_old(db, model, keep_last, keep_history_moves)
            # Still under the lock, the transaction committed: no publish can be between
            # checking that a file exists and referencing it.
            for sha in orphans:
                self.artifact_path(sha).unlink(missing_ok=True)
        return deleted

    @staticmethod
    def _delete_old(
        db: sqlite3.Connection, model: str, keep_last: int, keep_history_moves: int
    ) -> tuple[list[int], set[str]]:
        """(the deleted versions, the artifact digests no version references any more)."""
        protected = {
            r[0] for r in db.execute("SELECT version FROM aliases WHERE model = ?", (model,))
        }
        for old, new in db.execute(
            "SELECT from_version, to_version FROM alias_history WHERE model = ? "
            "ORDER BY id DESC LIMIT ?",
            (model, keep_history_moves),
        ):
            protected.update(v for v in (old, new) if v is not None)
        candidates = [
            (r[0], r[1])
            for r in db.execute(
                "SELECT version, sha256 FROM versions WHERE model = ? "
                "ORDER BY version DESC LIMIT -1 OFFSET ?",
                (model, keep_last),
            )
            if r[0] not in protected
        ]
        for version, _ in candidates:
            db.execute("DELETE FROM versions WHERE model = ? AND version = ?", (model, version))
        db.execute(
            "DELETE FROM publish_keys WHERE model = ? AND version NOT IN "
            "(SELECT version FROM versions WHERE model = ?)",
            (model, model),
        )
        orphans = {
            sha
            for _, sha in candidates
            if db.execute("SELECT 1 FROM versions WHERE sha256 = ?", (sha,)).fetchone() is None
        }
        return [v for v, _ in candidates], orphans

    @staticmethod
    def _refuse_if_aliased(db: sqlite3.Connection, model: str, version: int) -> None:
        row = db.execute(
            "SELECT alias FROM aliases WHERE model = ? AND version = ?", (model, version)
        ).fetchone()
        if row is not None:
            raise Conflict(f"version {version} is what alias {row[0]!r} points at")

    # -- aliases --------------------------------------------------------------------------

    def get_alias(self, model: str, alias: str) -> Alias:
        row = self._one(
            f"model {model!r} has no alias {alias!r}",
            "SELECT * FROM aliases WHERE model = ? AND alias = ?",
            model,
            alias,
        )
        return cast(Alias, dict(row))

    def list_aliases(self, model: str) -> list[Alias]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM aliases WHERE model = ? ORDER BY alias", (model,)
            ).fetchall()
        return [cast(Alias, dict(r)) for r in rows]

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
        db: sqlite3.Connection,
        model: str,
        alias: str,
        version: int,
        expected: int | None,
        actor: str,
        reason: str,
        kind: MoveKind,
    ) -> AliasMove:
        if (
            db.execute(
                "SELECT 1 FROM versions WHERE model = ? AND version = ?", (model, version)
            ).fetchone()
            is None
        ):
            raise NotFound(f"model {model!r} has no version {version}")
        row = db.execute(
            "SELECT version, seq FROM aliases WHERE model = ? AND alias = ?", (model, alias)
        ).fetchone()
        current, seq = (row[0], row[1] + 1) if row else (None, 1)
        if current != expected:
            raise Conflict(f"alias {alias!r} points at {current}, not {expected}")
        now = time.time()
        db.execute(
            "INSERT INTO aliases VALUES (?, ?, ?, ?, ?) ON CONFLICT (model, alias) "
            "DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at, "
            "seq = excluded.seq",
            (model, alias, version, now, seq),
        )
        cursor = db.execute(
            "INSERT INTO alias_history (model, alias, from_version, to_version, kind, actor, "
            "reason, at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (model, alias, current, version, kind, actor, reason, now, seq),
        )
        return AliasMove(
            id=cursor.lastrowid or 0,
            model=model,
            alias=alias,
            from_version=current,
            to_version=version,
            kind=kind,
            actor=actor,
            reason=reason,
            at=now,
            seq=seq,
        )

    def promote(self, model: str, alias: str, version: int, actor: str, reason: str) -> AliasMove:
        """Point ``alias`` at ``version`` from whatever it points at now (one transaction)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)
            ).fetchone()
            current = row[0] if row else None
            return self._move(db, model, alias, version, current, actor, reason, "promote")

    def rollback(
        self, model: str, alias: str, to_version: int | None, actor: str, reason: str
    ) -> AliasMove:
        """Move ``alias`` back: to ``to_version``, or to the version it had before the current
        one was put there by a forward move (so repeated rollbacks keep walking back)."""
        with self._tx() as db:
            row = db.execute(
                "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)
            ).fetchone()
            if row is None:
                raise NotFound(f"model {model!r} has no alias {alias!r}")
            current = row[0]
            target = (
                to_version if to_version is not None else self._previous(db, model, alias, current)
            )
            if target == current:
                raise Conflict(f"alias {alias!r} already points at {current}")
            return self._move(db, model, alias, target, current, actor, reason, "rollback")

    @staticmethod
    def _previous(db: sqlite3.Connection, model: str, alias: str, current: int) -> int:
        row = db.execute(
            "SELECT from_version FROM alias_history WHERE model = ? AND alias = ? "
            "AND to_version = ? AND kind != 'rollback' AND from_version IS NOT NULL "
            "ORDER BY id DESC LIMIT 1",
            (model, alias, current),
        ).fetchone()
        if row is None:
            raise Conflict(f"alias {alias!r} has no earlier version to roll back to")
        return int(row[0])

    def history(self, model: str, alias: str, limit: int) -> list[AliasMove]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM alias_history WHERE model = ? AND alias = ? "
                "ORDER BY id DESC LIMIT ?",
                (model, alias, limit),
            ).fetchall()
        return [cast(AliasMove, dict(r)) for r in rows]


def _version_dict(row: sqlite3.Row) -> ModelVersion:
    info = dict(row)
    info["metadata"] = orjson.loads(info["metadata"])
    info["archived"] = bool(info["archived"])
    return cast(ModelVersion, info)
