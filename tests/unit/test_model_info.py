"""ModelInfo: per-model facts computed once per mapped class (no database)."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asyncdb import Audited, ConfigurationError, SoftDeleteMixin, TimestampMixin, ValidationError
from asyncdb._model_info import ModelInfo, model_info


class Base(DeclarativeBase):
    """Not asyncdb's Base: these tables stay out of the metadata other tests create."""


class Account(Base, TimestampMixin, SoftDeleteMixin, Audited):
    __tablename__ = "mi_account"
    __table_args__ = (UniqueConstraint("org", "handle_col"),)
    __audit_exclude__ = {"secret"}

    id: Mapped[int] = mapped_column(primary_key=True)
    org: Mapped[str] = mapped_column(String(20))
    handle: Mapped[str] = mapped_column("handle_col", String(20))
    email: Mapped[str] = mapped_column(String(50), unique=True)
    secret: Mapped[str | None] = mapped_column(String(50), default=None)
    level: Mapped[int] = mapped_column(default=1)


class Plain(Base):
    __tablename__ = "mi_plain"
    id: Mapped[int] = mapped_column(primary_key=True)


def test_computed_once_and_frozen() -> None:
    info = model_info(Account)
    assert model_info(Account) is info
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.soft_delete = False  # type: ignore[misc]


def test_the_facts() -> None:
    info: ModelInfo = model_info(Account)
    assert info.pk_names == ("id",)
    assert info.filterable == info.columns - {"secret"}  # the audit-excluded secret
    assert {"org", "handle", "email", "secret", "level", "deleted_at"} <= info.columns
    assert info.attr_to_column["handle"].key == "handle_col"
    assert info.column_to_attr["handle_col"] == "handle"
    assert not info.names_are_columns
    assert info.soft_delete and info.has_updated_at and info.has_created_at and info.audited
    assert info.audit_excluded == frozenset({"secret"})
    assert frozenset({"org", "handle_col"}) in info.unique_sets
    assert frozenset({"email"}) in info.unique_sets
    assert frozenset({"id"}) in info.unique_sets
    assert "level" in dict(info.defaulted_columns)
    assert info.pk_tuple({"id": 7}) == (7,) and info.pk_tuple(7) == (7,)
    plain = model_info(Plain)
    assert plain.names_are_columns
    assert not (plain.soft_delete or plain.audited or plain.has_updated_at)


def test_unknown_columns_and_unmapped_classes_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match="Unknown field 'nope' for Account"):
        model_info(Account).check_columns(["nope"])
    with pytest.raises(ConfigurationError, match="mapped model class"):
        model_info(int)
