"""Facts about one mapped model, computed once per mapper and shared read-only.

The repository, the bulk operations, the cache and the filters all need the same
per-model facts (primary key, attribute↔column names, defaulted columns, soft-delete
and timestamp flags, audit exclusions, unique column sets). :func:`model_info`
computes them once per model class into a frozen :class:`ModelInfo`; nothing else
derives them, and nobody writes them.

Hardening work extends :class:`ModelInfo` here (e.g. :attr:`ModelInfo.filterable`,
the allow-list of fields filters and orderings may name).
"""

from __future__ import annotations

import dataclasses
import threading
import types
import weakref
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Column, Table, inspect
from sqlalchemy.orm import Mapper
from sqlalchemy.types import TypeEngine

from ._errors import ConfigurationError, ValidationError
from ._models import Audited
from ._values import Checker, checker_for

__all__ = ["ModelInfo", "model_info"]


@dataclasses.dataclass(frozen=True, eq=False, slots=True)
class ModelInfo:
    """The per-model facts every layer reads. Build it with :func:`model_info`."""

    model: type[Any]
    mapper: Mapper[Any]
    table: Table
    #: ``module.QualName``: a stable name for the model (cache namespaces).
    namespace: str
    pk_columns: tuple[Column[Any], ...]
    #: Attribute names of the primary key columns, in key order.
    pk_names: tuple[str, ...]
    #: Mapped column attribute names.
    columns: frozenset[str]
    #: Mapped column attribute names in mapper order.
    column_order: tuple[str, ...]
    attr_to_column: Mapping[str, Column[Any]]
    column_to_attr: Mapping[str, str]
    #: True when every attribute is named like its column (no renaming needed).
    names_are_columns: bool
    #: ``(attribute, column)`` for columns with a Python-side (non-sequence) default.
    defaulted_columns: tuple[tuple[str, Column[Any]], ...]
    column_types: Mapping[str, TypeEngine[Any]]
    soft_delete: bool
    has_updated_at: bool
    has_created_at: bool
    #: The model opted in to the audit trail (:class:`~asyncdb.Audited`).
    audited: bool
    audit_excluded: frozenset[str]
    #: Column-key sets that identify a row: the primary key, unique constraints,
    #: unique indexes and single unique columns.
    unique_sets: tuple[frozenset[str], ...]
    #: Fields that filters and orderings may name: the model's ``__filterable__``, else
    #: every mapped column except the secrets (``__audit_exclude__``).
    filterable: frozenset[str]
    #: Per column attribute: the function checking (and converting) a caller's value.
    value_checkers: Mapping[str, Checker]

    @property
    def name(self) -> str:
        """The model's class name (for messages)."""
        return self.model.__name__

    def key_of(self, obj: Any) -> tuple[Any, ...]:
        """The primary key of an instance as a tuple."""
        return tuple(self.mapper.primary_key_from_instance(obj))

    def pk_tuple(self, ident: Any) -> tuple[Any, ...]:
        """An id (scalar, tuple or mapping of key names) as a key tuple."""
        if isinstance(ident, Mapping):
            return tuple(ident[name] for name in self.pk_names)
        return ident if isinstance(ident, tuple) else (ident,)

    def check_columns(self, names: Any, *, what: str = "field") -> None:
        """Raise :class:`ValidationError` unless every name is a mapped column."""
        known = self.columns
        for name in names:
            if not isinstance(name, str) or name not in known:
                msg = (
                    f"Unknown {what} {name!r} for {self.model.__name__}. "
                    f"Use one of: {', '.join(sorted(known))}."
                )
                raise ValidationError(msg)


_INFOS: weakref.WeakKeyDictionary[type[Any], ModelInfo] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def model_info(model: type[Any]) -> ModelInfo:
    """The :class:`ModelInfo` of a mapped class (computed on first use, then cached).

    Raises :class:`ValidationError` for anything that is not a mapped class.
    """
    try:
        return _INFOS[model]
    except (KeyError, TypeError):
        pass
    info = _build(model)
    with _LOCK:
        return _INFOS.setdefault(model, info)


def _build(model: type[Any]) -> ModelInfo:
    try:
        mapper: Mapper[Any] = inspect(model)
        # Attributes stored in a column of the model's tables; a ``column_property`` of
        # an expression is computed by the ORM when it loads, never written or filtered.
        column_attrs = [p for p in mapper.column_attrs if isinstance(p.columns[0], Column)]
    except Exception as exc:
        msg = f"Repository needs a mapped model class (got {model!r})."
        raise ConfigurationError(msg) from exc
    table: Table = mapper.local_table  # type: ignore[assignment]
    attr_to_column: dict[str, Column[Any]] = {
        prop.key: prop.columns[0]  # type: ignore[misc]
        for prop in column_attrs
    }
    columns = frozenset(attr_to_column)
    audit_excluded = frozenset(getattr(model, "__audit_exclude__", ()))
    pk_columns: tuple[Column[Any], ...] = tuple(mapper.primary_key)  # type: ignore[arg-type]
    unique_sets = [frozenset(c.key for c in table.primary_key.columns)]
    for constraint in table.constraints:
        if type(constraint).__name__ == "UniqueConstraint":
            unique_sets.append(frozenset(c.key for c in constraint.columns))  # type: ignore[attr-defined]
    for index in table.indexes:
        if index.unique:
            unique_sets.append(frozenset(c.key for c in index.columns))
    unique_sets.extend(frozenset({c.key}) for c in table.columns if c.unique)
    return ModelInfo(
        model=model,
        mapper=mapper,
        table=table,
        namespace=f"{model.__module__}.{model.__qualname__}",
        pk_columns=pk_columns,
        pk_names=tuple(mapper.get_property_by_column(c).key for c in pk_columns),
        columns=columns,
        column_order=tuple(attr_to_column),
        attr_to_column=types.MappingProxyType(attr_to_column),
        column_to_attr=types.MappingProxyType(
            {col.key: attr for attr, col in attr_to_column.items()}
        ),
        names_are_columns=all(key == col.key for key, col in attr_to_column.items()),
        defaulted_columns=tuple(
            (key, col)
            for key, col in attr_to_column.items()
            if col.default is not None and not getattr(col.default, "is_sequence", False)
        ),
        column_types=types.MappingProxyType({k: c.type for k, c in attr_to_column.items()}),
        soft_delete="deleted_at" in columns,
        has_updated_at="updated_at" in columns,
        has_created_at="created_at" in columns,
        audited=isinstance(model, type) and issubclass(model, Audited),
        audit_excluded=audit_excluded,
        unique_sets=tuple(unique_sets),
        filterable=_filterable(model, columns, audit_excluded),
        value_checkers=types.MappingProxyType(
            {prop.key: checker_for(prop.columns[0].type, prop.key) for prop in column_attrs}
        ),
    )


def _filterable(
    model: type[Any], columns: frozenset[str], secrets: frozenset[str]
) -> frozenset[str]:
    declared = getattr(model, "__filterable__", None)
    if declared is None:
        return columns - secrets
    names = frozenset(declared)
    unknown = sorted(str(name) for name in names - columns)
    if unknown:
        msg = (
            f"{model.__name__}.__filterable__ names unknown column(s): {', '.join(unknown)}. "
            "Use mapped column names."
        )
        raise ConfigurationError(msg)
    return names
