"""The audit log's hash chain: chain_seq, prev_hash, row_hash, and the chain's unique index.

Rows written before this revision keep NULL in all three columns: they are "unchained",
and ``verify_audit_chain`` counts them without vouching for them.

Revision ID: asyncdb_0002
Revises: asyncdb_0001
Create Date: 2026-11-29 23:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "asyncdb_0002"
down_revision: str | Sequence[str] | None = "asyncdb_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of the model's type: a migration must not change when the model does.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("asyncdb_audit_log") as batch:
        batch.add_column(sa.Column("chain_seq", _ID, nullable=True))
        batch.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("row_hash", sa.String(length=64), nullable=True))
    op.create_index(
        "ux_asyncdb_audit_log_chain",
        "asyncdb_audit_log",
        ["table_name", "entity_id", "chain_seq"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ux_asyncdb_audit_log_chain", table_name="asyncdb_audit_log")
    with op.batch_alter_table("asyncdb_audit_log") as batch:
        batch.drop_column("row_hash")
        batch.drop_column("prev_hash")
        batch.drop_column("chain_seq")
