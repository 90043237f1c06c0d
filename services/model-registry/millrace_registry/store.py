"""The registry's store: one implementation over SQLite (the embedded default) or PostgreSQL
(several registry replicas on one database), SQLAlchemy Core for both (see :mod:`.schema`).

Every rule holds by the database, not by a lock in this process, so it holds across replicas:
version numbers come from a per-model counter row incremented with ``... RETURNING`` in the
publish's transaction (unique and gapless, never handed out twice even after retention pruned old
versions; a rolled-back publish takes its number back with it). A publish may carry an
idempotency key, unique in the database: the same key again returns the version it first made,
so a client may retry a publish whose answer it lost.

Alias moves are compare-and-set in one statement (``UPDATE ... WHERE version = expected``, or an
insert that conflicts when the alias already exists), append to an alias history that is never
rewritten, and carry a per-alias sequence number from the same transaction: followers apply a
move only if its number is above the one they hold, so late or reordered announcements cannot
move them backwards. Retention never removes a version an alias points at or one the last N
alias moves reference.

Artifacts are content-addressed (sha256): in the database's ``artifacts`` table on PostgreSQL
(every replica reads them), in a folder beside the SQLite file otherwise. Either way they are
written before the version row that references them commits, and removed only by the
transaction that removes their last reference.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from millrace.artifacts import sha256_hex
from millrace.registry_models import ModelVersion
from millrace_registry.alias_store import AliasMoves
from millrace_registry.schema import (
    alias_history,
    aliases,
    artifacts,
    make_engine,
    migrate,
    publish_keys,
    require_current,
    sqlite_url,
    version_counters,
    versions,
)
from millrace_registry.store_base import Conflict, NotFound, _version_dict


class RegistryStore(AliasMoves):
    def __init__(self, root: Path, database_url: str | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(database_url or sqlite_url(root))
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            migrate(self.engine)  # the embedded store: this process owns the file
        else:
            require_current(self.engine)  # migrated once per deploy, never by N replicas
        #: Artifacts in the database when replicas share it; else files beside the database.
        self.artifacts: Path | None = None if self.dialect == "postgresql" else root / "artifacts"
        if self.artifacts is not None:
            self.artifacts.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        self.engine.dispose()

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
        try:
            return self._publish(model, artifact, digest, signature, metadata, idempotency_key)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # Another replica published with this key between our check and our insert: its
            # version is the answer (the check below finds it now).
            return self._publish(model, artifact, digest, signature, metadata, idempotency_key)

    def _publish(
        self,
        model: str,
        artifact: bytes,
        digest: str,
        signature: str,
        metadata: dict[str, Any],
        idempotency_key: str | None,
    ) -> tuple[ModelVersion, bool]:
        with self._tx() as db:
            if idempotency_key is not None:
                seen = db.execute(
                    select(publish_keys.c.version, publish_keys.c.sha256).where(
                        publish_keys.c.model == model, publish_keys.c.key == idempotency_key
                    )
                ).first()
                if seen is not None:
                    if seen.sha256 != digest:
                        raise Conflict("this idempotency key was used to publish other bytes")
                    return self._version(db, model, int(seen.version)), False
            counter = self._upsert()(version_counters).values(model=model, last_version=1)
            version = int(
                db.execute(
                    counter.on_conflict_do_update(
                        index_elements=["model"],
                        set_={"last_version": version_counters.c.last_version + 1},
                    ).returning(version_counters.c.last_version)
                ).scalar_one()
            )
            # Before the row that references it, in the same transaction (see store_artifact).
            self.store_artifact(db, digest, artifact)
            db.execute(
                insert(versions).values(
                    model=model,
                    version=version,
                    sha256=digest,
                    signature=signature,
                    size=len(artifact),
                    metadata=metadata,
                    created_at=time.time(),
                    archived=0,
                )
            )
            if idempotency_key is not None:
                db.execute(
                    insert(publish_keys).values(
                        model=model, key=idempotency_key, version=version, sha256=digest
                    )
                )
            return self._version(db, model, version), True

    def store_artifact(self, db: Connection, digest: str, data: bytes) -> None:
        """The bytes of ``digest``, present when the caller's transaction commits. In the
        database the upsert locks the row, so a prune on another replica that would delete it
        waits for this transaction and then sees the new reference. In a folder the SQLite write
        lock (``BEGIN IMMEDIATE``) serialises this with every prune, in any process."""
        if self.artifacts is None:
            row = self._upsert()(artifacts).values(sha256=digest, data=data)
            db.execute(
                row.on_conflict_do_update(
                    index_elements=["sha256"], set_={"sha256": row.excluded.sha256}
                )
            )
            return
        path = self.artifact_path(digest)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def artifact_path(self, digest: str) -> Path:
        if self.artifacts is None:
            raise RuntimeError("this store keeps its artifacts in the database")
        return self.artifacts / digest[:2] / digest

    def has_artifact(self, digest: str) -> bool:
        if self.artifacts is not None:
            return self.artifact_path(digest).exists()
        found = self._read(
            lambda db: db.execute(select(artifacts.c.sha256).where(artifacts.c.sha256 == digest))
        )
        return found.first() is not None

    def get_version(self, model: str, version: int) -> ModelVersion:
        return self._read(lambda db: self._version(db, model, version))

    def list_versions(
        self,
        model: str,
        limit: int,
        offset: int,
        tag: tuple[str, str] | None = None,
        include_archived: bool = False,
    ) -> tuple[list[ModelVersion], int]:
        """Newest first; ``tag=(name, value)`` keeps versions whose ``metadata.tags`` match."""
        where = [versions.c.model == model]
        if not include_archived:
            where.append(versions.c.archived == 0)
        if tag is not None:
            where.append(versions.c.metadata[("tags", tag[0])].as_string() == tag[1])

        def query(db: Connection) -> tuple[list[ModelVersion], int]:
            rows = db.execute(
                select(versions)
                .where(*where)
                .order_by(versions.c.version.desc())
                .limit(limit)
                .offset(offset)
            ).all()
            total = db.execute(select(func.count()).select_from(versions).where(*where))
            return [_version_dict(r) for r in rows], int(total.scalar_one())

        return self._read(query)

    def list_models(self) -> list[str]:
        rows = self._read(
            lambda db: db.execute(
                select(versions.c.model).distinct().order_by(versions.c.model)
            ).all()
        )
        return [r.model for r in rows]

    def read_artifact(self, model: str, version: int) -> tuple[bytes, ModelVersion]:
        info = self.get_version(model, version)
        if self.artifacts is not None:
            return self.artifact_path(info["sha256"]).read_bytes(), info
        data = self._read(
            lambda db: db.execute(
                select(artifacts.c.data).where(artifacts.c.sha256 == info["sha256"])
            ).scalar_one()
        )
        return bytes(data), info

    def archive(self, model: str, version: int) -> ModelVersion:
        """Hide a version from listings (its artifact stays for history and rollback)."""
        with self._tx() as db:
            self._refuse_if_aliased(db, model, version)
            done = db.execute(
                update(versions)
                .where(versions.c.model == model, versions.c.version == version)
                .values(archived=1)
            )
            if done.rowcount == 0:
                raise NotFound(f"model {model!r} has no version {version}")
            return self._version(db, model, version)

    def prune(self, model: str, keep_last: int, keep_history_moves: int = 20) -> list[int]:
        """Delete versions beyond the newest ``keep_last``, except those an alias points at or
        the last ``keep_history_moves`` alias moves reference; returns the deleted numbers."""
        trash: list[tuple[Path, Path]] = []
        try:
            with self._tx() as db:
                deleted, orphans = self._delete_old(db, model, keep_last, keep_history_moves)
                self._delete_artifacts(db, orphans, trash)
        except BaseException:
            for path, moved in trash:  # the rows are back: so are their files
                os.replace(moved, path)
            raise
        for _, moved in trash:
            moved.unlink(missing_ok=True)
        return deleted

    def _delete_artifacts(
        self, db: Connection, digests: set[str], trash: list[tuple[Path, Path]]
    ) -> None:
        """Remove artifacts no version references, inside the transaction that removed their
        last reference: rows locked first, then checked again (a publish on another replica
        that references one holds its row until it commits, and is then seen here)."""
        for digest in sorted(digests):
            if self.artifacts is None:
                db.execute(
                    select(artifacts.c.sha256).where(artifacts.c.sha256 == digest).with_for_update()
                ).first()
            if db.execute(select(versions.c.version).where(versions.c.sha256 == digest)).first():
                continue
            if self.artifacts is None:
                db.execute(delete(artifacts).where(artifacts.c.sha256 == digest))
                continue
            # A file cannot roll back: moved aside now, unlinked once the transaction committed.
            path = self.artifact_path(digest)
            if path.exists():
                moved = path.with_suffix(f".deleted{os.getpid()}")
                os.replace(path, moved)
                trash.append((path, moved))

    @staticmethod
    def _delete_old(
        db: Connection, model: str, keep_last: int, keep_history_moves: int
    ) -> tuple[list[int], set[str]]:
        """(the deleted versions, the digests of their artifacts)."""
        protected = set(
            db.execute(select(aliases.c.version).where(aliases.c.model == model)).scalars()
        )
        for old, new in db.execute(
            select(alias_history.c.from_version, alias_history.c.to_version)
            .where(alias_history.c.model == model)
            .order_by(alias_history.c.id.desc())
            .limit(keep_history_moves)
        ):
            protected.update(v for v in (old, new) if v is not None)
        candidates = [
            (r.version, r.sha256)
            for r in db.execute(
                select(versions.c.version, versions.c.sha256)
                .where(versions.c.model == model)
                .order_by(versions.c.version.desc())
                .offset(keep_last)
            )
            if r.version not in protected
        ]
        for version, _ in candidates:
            db.execute(
                delete(versions).where(versions.c.model == model, versions.c.version == version)
            )
        db.execute(
            delete(publish_keys).where(
                publish_keys.c.model == model,
                publish_keys.c.version.not_in(
                    select(versions.c.version).where(versions.c.model == model)
                ),
            )
        )
        return [v for v, _ in candidates], {sha for _, sha in candidates}

    @staticmethod
    def _refuse_if_aliased(db: Connection, model: str, version: int) -> None:
        alias = db.execute(
            select(aliases.c.alias).where(aliases.c.model == model, aliases.c.version == version)
        ).scalar()
        if alias is not None:
            raise Conflict(f"version {version} is what alias {alias!r} points at")


__all__ = ["Conflict", "NotFound", "RegistryStore"]
