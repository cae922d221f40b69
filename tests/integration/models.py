"""Models used by the integration tests."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid

from sqlalchemy import ForeignKey, Integer, LargeBinary, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from asyncdb import Audited, Base, SoftDeleteMixin, TimestampMixin


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(Base, TimestampMixin, SoftDeleteMixin, Audited):
    """Audited, soft-deletable, timestamped: the main test model."""

    __tablename__ = "t_item"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str | None] = mapped_column(String(50), unique=True, default=None)
    qty: Mapped[int] = mapped_column(Integer, default=0)
    category: Mapped[str | None] = mapped_column(String(50), default=None)


class Account(Base, Audited):
    """Audited, hard-delete only, with an excluded secret column."""

    __tablename__ = "t_account"
    __audit_exclude__ = frozenset({"password_hash"})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200), default="")
    balance: Mapped[decimal.Decimal] = mapped_column(Numeric(18, 6), default=decimal.Decimal(0))


class Counter(Base):
    """A plain counter row for concurrency tests (not audited)."""

    __tablename__ = "t_counter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class Kind(Base):
    """Composite-unique rows for upsert tests."""

    __tablename__ = "t_kind"
    __table_args__ = (UniqueConstraint("namespace", "code"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(50))
    code: Mapped[str] = mapped_column(String(50))
    label: Mapped[str] = mapped_column(String(100), default="")


class Order(Base, Audited):
    """References Account (foreign-key tests) and carries odd value types (audit JSON)."""

    __tablename__ = "t_order"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("t_account.id"))
    token: Mapped[uuid.UUID | None] = mapped_column(default=None)
    amount: Mapped[decimal.Decimal | None] = mapped_column(Numeric(30, 10), default=None)
    color: Mapped[Color | None] = mapped_column(default=None)
    blob: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    due: Mapped[dt.date | None] = mapped_column(default=None)


class Profile(Base):
    """Declares its own allow-list of filterable fields (``__filterable__``)."""

    __tablename__ = "t_profile"
    __filterable__ = frozenset({"handle", "score"})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    handle: Mapped[str] = mapped_column(String(50))
    score: Mapped[int] = mapped_column(Integer, default=0)
    bio: Mapped[str | None] = mapped_column(String(200), default=None)
