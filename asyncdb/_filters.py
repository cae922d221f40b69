"""Caller-supplied filters and orderings, checked against the model before any SQL.

Filters are ``field=value`` or ``field__op=value``; orderings are ``"field"``,
``"-field"`` or a list of them. Only mapped column attributes are accepted, so
``metadata``, ``__class__`` or ``"name; drop table"`` never reach SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import UnaryExpression

from ._errors import ValidationError
from ._model_info import model_info

__all__ = [
    "FILTER_OPS",
    "build_filters",
    "build_order",
    "check_columns",
    "check_int",
    "column_names",
]


def _in(col: Any, value: Any) -> ColumnElement[bool]:
    return col.in_(_sequence("in", value))  # type: ignore[no-any-return]


def _not_in(col: Any, value: Any) -> ColumnElement[bool]:
    return col.not_in(_sequence("not_in", value))  # type: ignore[no-any-return]


def _is_null(col: Any, value: Any) -> ColumnElement[bool]:
    if not isinstance(value, bool):
        msg = f"The is_null filter takes True or False (got {type(value).__name__})."
        raise ValidationError(msg)
    return col.is_(None) if value else col.is_not(None)  # type: ignore[no-any-return]


def _text_op(name: str, method: str) -> Callable[[Any, Any], ColumnElement[bool]]:
    def op(col: Any, value: Any) -> ColumnElement[bool]:
        if not isinstance(value, str):
            msg = f"The {name} filter takes a string pattern (got {type(value).__name__})."
            raise ValidationError(msg)
        return getattr(col, method)(value)  # type: ignore[no-any-return]

    return op


FILTER_OPS: dict[str, Callable[[Any, Any], ColumnElement[bool]]] = {
    "eq": lambda col, v: col.is_(None) if v is None else col == v,
    "ne": lambda col, v: col.is_not(None) if v is None else col != v,
    "lt": lambda col, v: col < v,
    "lte": lambda col, v: col <= v,
    "gt": lambda col, v: col > v,
    "gte": lambda col, v: col >= v,
    "in": _in,
    "not_in": _not_in,
    "like": _text_op("like", "like"),
    "ilike": _text_op("ilike", "ilike"),
    "is_null": _is_null,
}


def check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    """Raise :class:`ValidationError` unless ``value`` is an int in ``[low, high]``.

    ``True`` and ``False`` are refused: a flag passed as a page number is a bug.
    """
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high  # type: ignore[operator]
    if not ok:
        bound = f"between {low} and {high}" if high is not None else f"of at least {low}"
        msg = f"{name} must be an integer {bound} (got {value!r})."
        raise ValidationError(msg)


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


def _column(model: type[Any], name: str) -> InstrumentedAttribute[Any]:
    check_columns(model, [name])
    attr: InstrumentedAttribute[Any] = getattr(model, name)
    return attr


def build_filters(model: type[Any], filters: Mapping[str, Any]) -> list[ColumnElement[bool]]:
    """Turn ``field=value`` / ``field__op=value`` pairs into SQL conditions."""
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
        conditions.append(FILTER_OPS[op](_column(model, field), value))
    return conditions


def parse_order(model: type[Any], order_by: str | Sequence[str] | None) -> list[tuple[str, bool]]:
    """``"name"``, ``"-name"`` or a list of them → ``[(field, descending), ...]``."""
    if order_by is None:
        return []
    items = [order_by] if isinstance(order_by, str) else list(order_by)
    parsed: list[tuple[str, bool]] = []
    for item in items:
        if not isinstance(item, str) or not item.lstrip("-"):
            msg = f"order_by takes field names such as 'name' or '-name' (got {item!r})."
            raise ValidationError(msg)
        descending = item.startswith("-")
        field = item[1:] if descending else item
        check_columns(model, [field], what="order_by field")
        parsed.append((field, descending))
    return parsed


def parse_order_with_key(
    model: type[Any], order_by: str | Sequence[str] | None, key: Sequence[str]
) -> list[tuple[str, bool]]:
    """:func:`parse_order`, then the primary key columns not named yet (ascending), so
    the order is total: rows with equal sort values still come in one fixed order."""
    order = parse_order(model, order_by)
    named = {field for field, _ in order}
    return order + [(name, False) for name in key if name not in named]


def build_order(model: type[Any], order: Sequence[tuple[str, bool]]) -> list[UnaryExpression[Any]]:
    """ORDER BY clauses for parsed ``order`` (NULLs last in both directions)."""
    clauses: list[UnaryExpression[Any]] = []
    for field, descending in order:
        col = getattr(model, field)
        clauses.append((col.desc() if descending else col.asc()).nulls_last())
    return clauses
