"""Copy a whole registry from one database to another (SQLite to PostgreSQL, typically): every
row as it is (version numbers, counters, aliases with their seqs, the alias history with its ids,
idempotency keys) and every artifact, verified by its sha256 on the way, in one transaction on
the target, which must be empty."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Connection

from millrace.artifacts import sha256_hex
from millrace.errors import MillraceError
from millrace_registry.schema import (
    alias_history,
    aliases,
    artifacts,
    publish_keys,
    version_counters,
    versions,
)
from millrace_registry.store import RegistryStore

ROW_TABLES = (versions, version_counters, aliases, alias_history, publish_keys)


class TargetNotEmpty(MillraceError, RuntimeError):
    pass


def _root(url: str, default: Path) -> Path:
    """A SQLite registry's folder (its artifacts are beside the file); else ``default``."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).parent
    return default


def copy_registry(
    source_url: str, target_url: str, data_dir: Path, progress: Callable[[str], object] = print
) -> dict[str, int]:
    source = RegistryStore(_root(source_url, data_dir), source_url)
    target = RegistryStore(_root(target_url, data_dir), target_url)
    try:
        with source.engine.connect() as read, target.engine.begin() as write:
            if write.execute(select(func.count()).select_from(versions)).scalar_one():
                raise TargetNotEmpty(f"{target_url.split('@')[-1]} already holds versions")
            counts = {t.name: _copy_rows(read, write, t) for t in ROW_TABLES}
            progress(f"rows copied: {counts}")
            digests = read.execute(select(versions.c.sha256).distinct()).scalars().all()
            for done, digest in enumerate(digests, 1):
                data = _artifact(source, read, digest)
                if sha256_hex(data) != digest:
                    raise MillraceError(f"artifact {digest} does not match its sha256")
                target.store_artifact(write, digest, data)
                if done % 100 == 0:
                    progress(f"artifacts: {done}/{len(digests)}")
            if write.dialect.name == "postgresql":
                write.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence('alias_history', 'id'), "
                        "COALESCE((SELECT MAX(id) FROM alias_history), 0) + 1, false)"
                    )
                )
    finally:
        source.close()
        target.close()
    return {
        "versions": counts["versions"],
        "aliases": counts["aliases"],
        "moves": counts["alias_history"],
        "artifacts": len(digests),
    }


def _copy_rows(read: Connection, write: Connection, table: object) -> int:
    rows = [r._asdict() for r in read.execute(select(table))]  # type: ignore[call-overload]
    for start in range(0, len(rows), 500):
        write.execute(insert(table), rows[start : start + 500])  # type: ignore[arg-type]
    return len(rows)


def _artifact(store: RegistryStore, db: Connection, digest: str) -> bytes:
    if store.artifacts is not None:
        return store.artifact_path(digest).read_bytes()
    return bytes(
        db.execute(select(artifacts.c.data).where(artifacts.c.sha256 == digest)).scalar_one()
    )
