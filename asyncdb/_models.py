"""Declarative base and mixins: timestamps, soft delete, and the audit opt-in marker."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, TypeDecorator
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Audited", "Base", "SoftDeleteMixin", "TimestampMixin", "UTCDateTime", "utcnow"]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: Dialects whose timestamps hold no time zone and need fsp=6 for microseconds.
_NAIVE_MICROSECOND_DIALECTS = frozenset({"mysql", "mariadb"})


def utcnow() -> dt.datetime:
    """The current time as an aware UTC datetime."""
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back as an aware UTC datetime.

    SQLite has no time zones: without this, an aware value written would come back
    naive. A naive value given by the caller is taken to be UTC already. MariaDB/MySQL
    store ``DATETIME(6)`` (their ``DATETIME`` drops the microseconds) in UTC, naive.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in _NAIVE_MICROSECOND_DIALECTS:
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            return value  # type: ignore[no-any-return]
        aware: dt.datetime = value
        if aware.tzinfo is None:
            aware = aware.replace(tzinfo=dt.timezone.utc)
        aware = aware.astimezone(dt.timezone.utc)
        if dialect.name == "sqlite" or dialect.name in _NAIVE_MICROSECOND_DIALECTS:
            return aware.replace(tzinfo=None)
        return aware

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        result: dt.datetime = value
        if result.tzinfo is None:
            return result.replace(tzinfo=dt.timezone.utc)
        return result.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (stable migration names)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dt.datetime: UTCDateTime}


class TimestampMixin:
    """``created_at`` and ``updated_at`` in UTC; every update path sets ``updated_at``."""

    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


class SoftDeleteMixin:
    """``deleted_at``: when set, the row is soft-deleted and hidden from reads."""

    deleted_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime(), default=None, nullable=True, index=True
    )


class Audited:
    """Marker: changes to this model are written to the audit log.

    ``__audit_exclude__`` names columns (password hashes, tokens) kept out of it::

        class User(Base, Audited):
            __audit_exclude__ = frozenset({"password_hash"})
    """

    __audit_exclude__: ClassVar[frozenset[str] | set[str]] = frozenset()
