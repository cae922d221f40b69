"""The audit log table and its actions (the toolkit's first migrated table)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ._models import UTCDateTime, utcnow
from ._schema import toolkit_metadata

__all__ = ["AUDIT_TABLE", "AuditAction", "AuditLog", "ToolkitBase"]

AUDIT_TABLE = "asyncdb_audit_log"

# none_as_null: a missing old/new value is SQL NULL (``old_values IS NULL`` finds it),
# not the JSON literal null.
_JSON = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
_ID = BigInteger().with_variant(Integer(), "sqlite")


class AuditAction(str, enum.Enum):
    """What happened to an entity."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    SOFT_DELETE = "SOFT_DELETE"
    RESTORE = "RESTORE"
    BULK_CREATE = "BULK_CREATE"
    BULK_UPDATE = "BULK_UPDATE"
    BULK_DELETE = "BULK_DELETE"
    UPSERT = "UPSERT"
    #: written by retention cleanup: anchors the chains whose oldest rows it removed
    CHECKPOINT = "CHECKPOINT"


class ToolkitBase(DeclarativeBase):
    """Declarative base of the toolkit's own tables (kept out of ``Base.metadata``)."""

    metadata = toolkit_metadata


class AuditLog(ToolkitBase):
    """One change to one entity: who, what (old and new values as JSON), when (UTC)."""

    __tablename__ = AUDIT_TABLE
    __table_args__ = (
        Index("ix_asyncdb_audit_log_entity", "table_name", "entity_id"),
        Index("ix_asyncdb_audit_log_occurred_at", "occurred_at"),
        Index("ix_asyncdb_audit_log_user_id", "user_id"),
        Index("ix_asyncdb_audit_log_correlation_id", "correlation_id"),
        Index("ix_asyncdb_audit_log_action", "action"),
        # One hash chain per entity (see _audit_chain): its order, and the guard against
        # two writers forking it.
        Index("ux_asyncdb_audit_log_chain", "table_name", "entity_id", "chain_seq", unique=True),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    table_name: Mapped[str] = mapped_column(String(128), nullable=False)
    entity_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    action: Mapped[str] = mapped_column(String(20), nullable=False)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    user_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    session_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    correlation_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    old_values: Mapped[dict[str, Any] | None] = mapped_column(_JSON, nullable=True)
    new_values: Mapped[dict[str, Any] | None] = mapped_column(_JSON, nullable=True)
    changed_fields: Mapped[list[str] | None] = mapped_column(_JSON, nullable=True)
    extra: Mapped[dict[str, Any] | None] = mapped_column(_JSON, nullable=True)
    # The tamper-evident chain; NULL on rows written before asyncdb_0002 ("unchained").
    chain_seq: Mapped[int | None] = mapped_column(_ID, nullable=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    row_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)

    def __repr__(self) -> str:
        return (
            f"<AuditLog #{self.id} {self.action} {self.table_name}:{self.entity_id} "
            f"user={self.user_id}>"
        )
