"""The audit log table and its indexes.

Revision ID: asyncdb_0001
Revises:
Create Date: 2025-11-26 06:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

# Revision identifiers, used by Alembic. New toolkit revisions are named
# asyncdb_NNNN and extend the "asyncdb" branch: see docs/migrations.md.
revision: str = "asyncdb_0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("asyncdb",)
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model's types: a migration must not change when the model does.
_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# MariaDB/MySQL's DATETIME drops microseconds, which the audit chain's hashes cover.
# (Added with MariaDB support; no database of theirs ever ran this revision without it.)
_TIMESTAMP = sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "asyncdb_audit_log",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("table_name", sa.String(length=128), nullable=False),
        sa.Column("entity_id", sa.String(length=255), nullable=True),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("occurred_at", _TIMESTAMP, nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=True),
        sa.Column("session_id", sa.String(length=255), nullable=True),
        sa.Column("correlation_id", sa.String(length=255), nullable=True),
        sa.Column("old_values", _JSON, nullable=True),
        sa.Column("new_values", _JSON, nullable=True),
        sa.Column("changed_fields", _JSON, nullable=True),
        sa.Column("extra", _JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asyncdb_audit_log")),
    )
    op.create_index("ix_asyncdb_audit_log_action", "asyncdb_audit_log", ["action"])
    op.create_index("ix_asyncdb_audit_log_correlation_id", "asyncdb_audit_log", ["correlation_id"])
    op.create_index("ix_asyncdb_audit_log_entity", "asyncdb_audit_log", ["table_name", "entity_id"])
    op.create_index("ix_asyncdb_audit_log_occurred_at", "asyncdb_audit_log", ["occurred_at"])
    op.create_index("ix_asyncdb_audit_log_user_id", "asyncdb_audit_log", ["user_id"])


def downgrade() -> None:
    # Dropping the table drops its indexes with it.
    op.drop_table("asyncdb_audit_log")
