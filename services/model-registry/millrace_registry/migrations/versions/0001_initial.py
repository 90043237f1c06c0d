"""The registry's tables; a store made before migrations existed is adopted as it is (its tables
kept, the per-alias ``seq`` columns added where an older release lacked them).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import BYTEA, JSONB

revision = "0001"
down_revision = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "versions" not in existing:
        op.create_table(
            "versions",
            sa.Column("model", sa.Text, primary_key=True),
            sa.Column("version", sa.BigInteger, primary_key=True),
            sa.Column("sha256", sa.Text, nullable=False),
            sa.Column("signature", sa.Text, nullable=False),
            sa.Column("size", sa.BigInteger, nullable=False),
            sa.Column("metadata", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("archived", sa.Integer, nullable=False, server_default="0"),
        )
        op.create_index("versions_by_sha", "versions", ["sha256"])
    if "version_counters" not in existing:
        op.create_table(
            "version_counters",
            sa.Column("model", sa.Text, primary_key=True),
            sa.Column("last_version", sa.BigInteger, nullable=False),
        )
    if "aliases" not in existing:
        op.create_table(
            "aliases",
            sa.Column("model", sa.Text, primary_key=True),
            sa.Column("alias", sa.Text, primary_key=True),
            sa.Column("version", sa.BigInteger, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
            sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
        )
    if "alias_history" not in existing:
        op.create_table(
            "alias_history",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("model", sa.Text, nullable=False),
            sa.Column("alias", sa.Text, nullable=False),
            sa.Column("from_version", sa.BigInteger),
            sa.Column("to_version", sa.BigInteger, nullable=False),
            sa.Column("kind", sa.Text, nullable=False),
            sa.Column("actor", sa.Text, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("at", sa.Float, nullable=False),
            sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
        )
        op.create_index("alias_history_by_alias", "alias_history", ["model", "alias", "id"])
    if "publish_keys" not in existing:
        op.create_table(
            "publish_keys",
            sa.Column("model", sa.Text, primary_key=True),
            sa.Column("key", sa.Text, primary_key=True),
            sa.Column("version", sa.BigInteger, nullable=False),
            sa.Column("sha256", sa.Text, nullable=False),
        )
    if "artifacts" not in existing:
        op.create_table(
            "artifacts",
            sa.Column("sha256", sa.Text, primary_key=True),
            sa.Column("data", sa.LargeBinary().with_variant(BYTEA(), "postgresql"), nullable=False),
        )
    for table in ("aliases", "alias_history"):
        columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
        if "seq" not in columns:
            op.add_column(table, sa.Column("seq", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    for table in ("artifacts", "publish_keys", "alias_history", "aliases", "version_counters"):
        op.drop_table(table)
    op.drop_table("versions")
