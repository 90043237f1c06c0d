"""The registry's tables, the engine over ``registry_database_url`` and its migrations.

One schema for both backends, SQLAlchemy Core over SQLite (the embedded default) or PostgreSQL
(psycopg 3 and its pool), changed only by Alembic revisions (``migrations/``). The embedded
SQLite store migrates itself when it opens (one process owns the file); a PostgreSQL store is
migrated once per deploy by ``millrace registry migrate`` and refuses to serve from a schema
that is not at the newest revision, so N replicas never race to change it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB
from sqlalchemy.engine import Connection, Engine

from millrace.errors import MillraceError

metadata = MetaData()

# Version numbers are 64-bit: the API takes any up to 2**53 (what JSON carries exactly).

versions = Table(
    "versions",
    metadata,
    Column("model", Text, primary_key=True),
    Column("version", BigInteger, primary_key=True),
    Column("sha256", Text, nullable=False),
    Column("signature", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("metadata", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("archived", Integer, nullable=False, server_default="0"),
    Index("versions_by_sha", "sha256"),
    Index("versions_listed", "model", "archived", "version"),
)
version_counters = Table(
    "version_counters",
    metadata,
    Column("model", Text, primary_key=True),
    Column("last_version", BigInteger, nullable=False),
)
aliases = Table(
    "aliases",
    metadata,
    Column("model", Text, primary_key=True),
    Column("alias", Text, primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("seq", Integer, nullable=False, server_default="0"),
)
alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", Text, nullable=False),
    Column("alias", Text, nullable=False),
    Column("from_version", BigInteger),
    Column("to_version", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", Float, nullable=False),
    Column("seq", Integer, nullable=False, server_default="0"),
    Index("alias_history_by_alias", "model", "alias", "id"),
)
publish_keys = Table(
    "publish_keys",
    metadata,
    Column("model", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("sha256", Text, nullable=False),
)
#: Content-addressed artifact bytes, for a store whose replicas share no folder (PostgreSQL).
artifacts = Table(
    "artifacts",
    metadata,
    Column("sha256", Text, primary_key=True),
    Column("data", LargeBinary().with_variant(BYTEA(), "postgresql"), nullable=False),
)

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaNotCurrent(MillraceError, RuntimeError):
    """The database's schema is not at the newest revision this release knows."""


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'registry.db'}"


def make_engine(url: str) -> Engine:
    """An engine for ``url``: ``postgresql://`` goes through psycopg 3 and a connection pool;
    SQLite gets WAL, a busy timeout, and ``BEGIN IMMEDIATE`` so that every transaction holds the
    write lock from its start (the counter and the compare-and-set read what they write)."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    options: dict[str, Any] = {
        "json_serializer": lambda value: orjson.dumps(value).decode(),
        "json_deserializer": orjson.loads,
    }
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **options
        )
        event.listen(engine, "connect", _sqlite_connected)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True, **options)


def _sqlite_connected(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event says how to begin
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
        dbapi_connection.execute(f"PRAGMA {pragma}")


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (a store made before migrations existed is
    recognised by its tables and adopted)."""
    with engine.begin() as connection:
        command.upgrade(_config(connection), "head")


def require_current(engine: Engine) -> None:
    """Raise :class:`SchemaNotCurrent` unless the schema is at the newest revision."""
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise SchemaNotCurrent(
            f"the registry database is at schema revision {current or 'none'}, this release "
            f"needs {head}: run `millrace registry migrate --to <url>` once, then start the "
            "registry replicas"
        )
