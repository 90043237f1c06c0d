"""`millrace registry migrate`: a store made before migrations existed is adopted as it is, and
a SQLite registry moved to PostgreSQL keeps versions, aliases, history and artifacts identical."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from millrace_cli.app import app
from millrace_registry.schema import alias_history, make_engine, publish_keys, versions
from millrace_registry.store import RegistryStore
from millrace_stack.postgres import PostgresServer

pytestmark = pytest.mark.integration

#: The schema of the releases before migrations, without the per-alias seq columns.
OLD_SCHEMA = """
CREATE TABLE versions (model TEXT NOT NULL, version INTEGER NOT NULL, sha256 TEXT NOT NULL,
    signature TEXT NOT NULL, size INTEGER NOT NULL, metadata TEXT NOT NULL,
    created_at REAL NOT NULL, archived INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (model, version));
CREATE TABLE version_counters (model TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
CREATE TABLE aliases (model TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
    updated_at REAL NOT NULL, PRIMARY KEY (model, alias));
CREATE TABLE alias_history (id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL,
    alias TEXT NOT NULL, from_version INTEGER, to_version INTEGER NOT NULL, kind TEXT NOT NULL,
    actor TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE publish_keys (model TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL,
    sha256 TEXT NOT NULL, PRIMARY KEY (model, key));
INSERT INTO versions VALUES ('m', 1, 'abc', 's', 3, '{"tags": {"stage": "old"}}', 1.0, 0);
INSERT INTO version_counters VALUES ('m', 1);
INSERT INTO aliases VALUES ('m', 'production', 1, 1.0);
"""


def test_a_store_from_before_migrations_is_adopted(tmp_path: Path):
    with sqlite3.connect(tmp_path / "registry.db") as old:
        old.executescript(OLD_SCHEMA)
    store = RegistryStore(tmp_path)
    assert store.get_version("m", 1)["metadata"] == {"tags": {"stage": "old"}}
    assert store.get_alias("m", "production")["seq"] == 0
    assert store.publish("m", b"new", "s", {})[0]["version"] == 2
    assert store.move_alias("m", "production", 2, 1, "t", "after the upgrade")["seq"] == 1
    store.close()


def test_a_sqlite_registry_moves_to_postgresql_identical(
    tmp_path: Path, postgres_server: PostgresServer
):
    source = RegistryStore(tmp_path / "old")
    for i in range(1, 8):
        source.publish("m", f"artifact {i % 5}".encode() * 1000, f"sig{i}", {"i": i}, f"key{i}")
    source.publish("other", b"other", "sig", {})
    source.move_alias("m", "production", 3, None, "alice", "first")
    source.promote("m", "production", 6, "bob", "better")
    source.rollback("m", "production", None, "carol", "worse")
    source.prune("m", keep_last=3, keep_history_moves=2)
    source.close()
    target = postgres_server.create_database("registry_moved")
    source_url = f"sqlite:///{tmp_path / 'old' / 'registry.db'}"

    result = CliRunner().invoke(app, ["registry", "migrate", "--from", source_url, "--to", target])
    assert result.exit_code == 0, result.output
    assert "copied 5 versions" in result.output, result.output

    def dump(url: str) -> list[list[tuple[object, ...]]]:
        engine = make_engine(url)
        with engine.connect() as db:
            rows = [
                sorted(tuple(r) for r in db.execute(select(table)))
                for table in (versions, alias_history, publish_keys)
            ]
        engine.dispose()
        return rows

    assert dump(source_url) == dump(target)
    old, new = RegistryStore(tmp_path / "old"), RegistryStore(tmp_path / "unused", target)
    for model in ("m", "other"):
        for info in old.list_versions(model, 100, 0, include_archived=True)[0]:
            assert new.read_artifact(model, info["version"]) == old.read_artifact(
                model, info["version"]
            )
    assert new.get_alias("m", "production") == old.get_alias("m", "production")
    # Numbers go on where the old registry left them; the history's ids too.
    assert new.publish("m", b"next", "s", {})[0]["version"] == 8
    assert new.move_alias("m", "production", 8, 3, "dave", "on")["id"] == 4
    old.close()
    new.close()
