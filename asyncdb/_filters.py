"""Caller-supplied filters and orderings, checked against the model before any SQL.

Filters are ``field=value`` or ``field__op=value``; orderings are ``"field"``,
``"-field"`` or a list of them. Only mapped column attributes are accepted, so
``metadata``, ``__class__`` or ``"name; drop table"`` never reach SQL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Enum, String
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import UnaryExpression

from ._errors import ConfigurationError, ValidationError
from ._model_info import model_info
from ._values import MAX_INT64, check_text, coerce_value

__all__ = [
    "FILTER_OPS",
    "MAX_IN_VALUES",
    "as_int",
    "build_filters",
    "build_order",
    "check_columns",
    "check_filterable",
    "check_flag",
    "check_int",
    "column_names",
    "filterable_fields",
]


def _coerced(col: Any, value: Any, field: str) -> Any:
    return coerce_value(col.type, value, field)


def _sequence_of(col: Any, op: str, value: Any, field: str) -> list[Any]:
    items = _sequence(op, value)
    if len(items) > MAX_IN_VALUES:
        msg = (
            f"{field} lists {len(items)} values; at most {MAX_IN_VALUES} are accepted in one "
            "filter. Split the query, or filter by a related row instead of a list."
        )
        raise ValidationError(msg)
    return [_coerced(col, item, field) for item in items]


def _is_null(col: Any, value: Any, field: str) -> ColumnElement[bool]:
    if not isinstance(value, bool):
        msg = f"The is_null filter takes True or False (got {type(value).__name__})."
        raise ValidationError(msg)
    return col.is_(None) if value else col.is_not(None)  # type: ignore[no-any-return]


def _text_op(name: str, method: str) -> Callable[[Any, Any, str], ColumnElement[bool]]:
    def op(col: Any, value: Any, field: str) -> ColumnElement[bool]:
        if not isinstance(value, str):
            msg = f"The {name} filter takes a string pattern (got {type(value).__name__})."
            raise ValidationError(msg)
        column_type = col.type
        if not isinstance(column_type, String) or isinstance(column_type, Enum):
            msg = f"The {name} filter works on text columns only; {field} is not one."
            raise ValidationError(msg)
        return getattr(col, method)(check_text(field, value))  # type: ignore[no-any-return]

    return op


def _compare(method: str) -> Callable[[Any, Any, str], ColumnElement[bool]]:
    def op(col: Any, value: Any, field: str) -> ColumnElement[bool]:
        if value is None:
            msg = f"{field} cannot compare with None; use the is_null filter."
            raise ValidationError(msg)
        return getattr(col, method)(_coerced(col, value, field))  # type: ignore[no-any-return]

    return op


#: The most values one ``__in``/``__not_in`` filter takes: far below every backend's
#: limit on bound parameters in a statement (32,767 on PostgreSQL, 32,766 on SQLite).
MAX_IN_VALUES = 10_000

FILTER_OPS: dict[str, Callable[[Any, Any, str], ColumnElement[bool]]] = {
    "eq": lambda col, v, f: col.is_(None) if v is None else col == _coerced(col, v, f),
    "ne": lambda col, v, f: col.is_not(None) if v is None else col != _coerced(col, v, f),
    "lt": _compare("__lt__"),
    "lte": _compare("__le__"),
    "gt": _compare("__gt__"),
    "gte": _compare("__ge__"),
    "in": lambda col, v, f: col.in_(_sequence_of(col, "in", v, f)),
    "not_in": lambda col, v, f: col.not_in(_sequence_of(col, "not_in", v, f)),
    "like": _text_op("like", "like"),
    "ilike": _text_op("ilike", "ilike"),
    "is_null": _is_null,
}


def check_int(
    name: str,
    value: object,
    low: int,
    high: int | None = None,
    *,
    error: type[ValidationError] | type[ConfigurationError] = ValidationError,
) -> None:
    """Raise ``error`` unless ``value`` is an int in ``[low, high]``.

    ``True`` and ``False`` are refused: a flag passed as a page number is a bug. Caller
    input gets a :class:`ValidationError`; an option (``error=ConfigurationError``) a
    :class:`ConfigurationError`.
    """
    top = MAX_INT64 if high is None else high
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= top
    if not ok:
        bound = f"between {low} and {top}"
        msg = f"{name} must be an integer {bound} (got {_short(value)})."
        raise error(msg)


#: A whole number as a query string carries it: ``"20"``, ``" 3 "`` (at most 19 digits).
_INT_TEXT = re.compile(r"\s*\d{1,19}\s*")


def as_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``: an int, or digits from a query string.

    ``"20"`` converts like a filter value on an integer column does; ``"-1"``,
    ``"abc"``, ``2.0`` and ``True`` are a :class:`ValidationError`.
    """
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        value = int(value)
    check_int(name, value, low, high)
    assert isinstance(value, int)
    return value


def _short(value: object) -> str:
    """A caller's bad value for a message, cut short (a query string may be huge)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def check_flag(name: str, value: object) -> bool:
    """``value`` if it is a bool; :class:`ValidationError` otherwise.

    A flag from a query string is a string, and ``"false"`` is truthy: taking it as a
    flag would return soft-deleted rows or soft-delete for ``with_deleted="false"``.
    """
    if not isinstance(value, bool):
        msg = (
            f"{name} must be True or False (got a {type(value).__name__}); convert "
            "query-string values explicitly."
        )
        raise ValidationError(msg)
    return value


def _sequence(op: str, value: Any) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        msg = f"The {op} filter takes a list of values (got {type(value).__name__})."
        raise ValidationError(msg)
    return list(value)


def column_names(model: type[Any]) -> frozenset[str]:
    """The mapped column attribute names of ``model``."""
    return model_info(model).columns


def check_columns(model: type[Any], names: Iterable[str], *, what: str = "field") -> None:
    """Raise :class:`ValidationError` unless every name is a mapped column of ``model``."""
    model_info(model).check_columns(names, what=what)


def filterable_fields(model: type[Any], allowed: Iterable[str] | None = None) -> frozenset[str]:
    """The fields callers may filter and order ``model`` by.

    ``allowed`` (a repository's ``filterable=``) is an allow-list; without it, the
    model's own (:attr:`ModelInfo.filterable`: its ``__filterable__``, or every mapped
    column except the secrets in ``__audit_exclude__``, whose values must not be
    guessable through ``?password_hash__like=a%``). A secret is filterable only when
    an allow-list names it explicitly.
    """
    info = model_info(model)
    if allowed is None:
        return info.filterable
    if isinstance(allowed, str):
        msg = f"filterable takes a list of field names (got the string {allowed!r})."
        raise ConfigurationError(msg)
    names = frozenset(allowed)
    unknown = sorted(str(name) for name in names - info.columns)
    if unknown:
        msg = (
            f"The filterable fields of {info.name} name unknown column(s): "
            f"{', '.join(unknown)}. Use mapped column names."
        )
        raise ConfigurationError(msg)
    return names


def check_filterable(
    model: type[Any], name: object, fields: frozenset[str], *, what: str = "field"
) -> str:
    """``name`` if callers may filter or order by it; :class:`ValidationError` otherwise."""
    if isinstance(name, str) and name in fields:
        return name
    if isinstance(name, str) and name in column_names(model):
        msg = (
            f"{model.__name__}.{name} cannot be used to filter or order: it is not in the "
            "filterable fields (secret columns never are, unless an allow-list names them)."
        )
        raise ValidationError(msg)
    msg = f"Unknown {what} {name!r} for {model.__name__}. Use one of: {', '.join(sorted(fields))}."
    raise ValidationError(msg)


def _column(model: type[Any], name: str, fields: frozenset[str]) -> InstrumentedAttribute[Any]:
    check_filterable(model, name, fields)
    attr: InstrumentedAttribute[Any] = getattr(model, name)
    return attr


def build_filters(
    model: type[Any], filters: Mapping[str, Any], fields: frozenset[str] | None = None
) -> list[ColumnElement[bool]]:
    """Turn ``field=value`` / ``field__op=value`` pairs into SQL conditions.

    ``fields`` are the filterable fields (default: :func:`filterable_fields`).
    """
    if fields is None:
        fields = filterable_fields(model)
    conditions: list[ColumnElement[bool]] = []
    for key, value in filters.items():
        field, sep, op = key.partition("__")
        if not sep:
            op = "eq"
        if op not in FILTER_OPS:
            msg = (
                f"Unknown filter operator {op!r} in {key!r}. "
                f"Use one of: {', '.join(sorted(FILTER_OPS))}."
            )
            raise ValidationError(msg)
        conditions.append(FILTER_OPS[op](_column(model, field, fields), value, field))
    return conditions


def parse_order(
    model: type[Any],
    order_by: str | Sequence[str] | None,
    fields: frozenset[str] | None = None,
) -> list[tuple[str, bool]]:
    """``"name"``, ``"-name"`` or a list of them → ``[(field, descending), ...]``."""
    if fields is None:
        fields = filterable_fields(model)
    if order_by is None:
        return []
    if not isinstance(order_by, (str, list, tuple)):
        msg = (
            "order_by takes a field name such as 'name' or '-name', or a list of them "
            f"(got a {type(order_by).__name__})."
        )
        raise ValidationError(msg)
    items = [order_by] if isinstance(order_by, str) else list(order_by)
    parsed: list[tuple[str, bool]] = []
    for item in items:
        if not isinstance(item, str) or not item.lstrip("-"):
            msg = f"order_by takes field names such as 'name' or '-name' (got {item!r})."
            raise ValidationError(msg)
        descending = item.startswith("-")
        field = item[1:] if descending else item
        check_filterable(model, field, fields, what="order_by field")
        parsed.append((field, descending))
    return parsed


def parse_order_with_key(
    model: type[Any],
    order_by: str | Sequence[str] | None,
    key: Sequence[str],
    fields: frozenset[str] | None = None,
) -> list[tuple[str, bool]]:
    """:func:`parse_order`, then the primary key columns not named yet (ascending), so
    the order is total: rows with equal sort values still come in one fixed order."""
    order = parse_order(model, order_by, fields)
    named = {field for field, _ in order}
    return order + [(name, False) for name in key if name not in named]


def build_order(model: type[Any], order: Sequence[tuple[str, bool]]) -> list[UnaryExpression[Any]]:
    """ORDER BY clauses for parsed ``order`` (NULLs last in both directions).

    ``NULLS LAST`` is written for nullable columns only: on a NOT NULL column it changes
    nothing but would keep PostgreSQL from reading a plain index backwards for ``-field``.
    """
    columns = model_info(model).attr_to_column
    clauses: list[UnaryExpression[Any]] = []
    for field, descending in order:
        col = getattr(model, field)
        clause = col.desc() if descending else col.asc()
        clauses.append(clause.nulls_last() if columns[field].nullable else clause)
    return clauses
