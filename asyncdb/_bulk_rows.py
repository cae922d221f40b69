"""Caller rows made ready for the bulk writes: checked, converted, defaults filled.

A row is a mapping of field names to values (or a model instance); each value goes
through its column's checker (:mod:`._values`) and the Python-side column defaults are
filled in, so every row of a batch names the same columns and the audit log sees what
was written. A plain batch (dicts naming the same fields, values already of their
column's type) is checked one column at a time instead of one value at a time.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._errors import ValidationError
from ._model_info import ModelInfo
from ._values import ColumnCheck, coerce_values, column_check_for

__all__ = ["batch_values", "iter_values", "row_values", "to_columns", "with_defaults"]


@functools.cache
def _python_defaults(info: ModelInfo) -> tuple[tuple[str, bool, Any], ...]:
    """``(key, callable?, value or function)`` of each Python-side column default, read
    off the columns once per model instead of once per row."""
    found: list[tuple[str, bool, Any]] = []
    for key, column in info.defaulted_columns:
        default: Any = column.default
        if default is None or getattr(default, "is_sequence", False):
            continue
        if getattr(default, "is_scalar", False):
            found.append((key, False, default.arg))
        elif getattr(default, "is_callable", False):
            found.append((key, True, default.arg))
    return tuple(found)


def row_values(info: ModelInfo, row: Any, index: int) -> dict[str, Any]:
    if isinstance(row, info.model):
        state_dict = row.__dict__
        return {k: state_dict[k] for k in info.columns if k in state_dict}
    if not isinstance(row, Mapping):
        msg = (
            f"Row {index}: expected a mapping of field names to values or a "
            f"{info.model.__name__} (got {type(row).__name__})."
        )
        raise ValidationError(msg)
    if not info.columns.issuperset(row):
        unknown = [k for k in row if k not in info.columns]
        msg = (
            f"Row {index}: unknown field {unknown[0]!r} for {info.model.__name__}. "
            f"Use one of: {', '.join(sorted(info.columns))}."
        )
        raise ValidationError(msg)
    return coerce_values(info.value_checkers, row, row=index)


@functools.cache
def _column_checks(info: ModelInfo) -> dict[str, ColumnCheck]:
    """Per column attribute, the batch form of its value checker (read once per model)."""
    return {key: column_check_for(info.column_types[key]) for key in info.value_checkers}


def _as_they_are(info: ModelInfo, batch: Sequence[Any]) -> bool:
    """True when the checks would return every row of ``batch`` unchanged: each row a
    plain dict naming the same known fields, each column's values passing the batch form
    of its checks (:func:`~._values.column_check_for`: one pass per column in C instead
    of one Python call per value)."""
    if not batch or type(batch[0]) is not dict:
        return False
    keys = batch[0].keys()
    if not info.columns.issuperset(keys):
        return False
    # One pass each in C: every row a dict with as many keys as the first. A row that
    # lacks one of the first row's keys then fails its column's itemgetter below, so
    # every row names the same keys (6x cheaper than comparing each row's key view).
    if set(map(type, batch)) != {dict} or set(map(len, batch)) != {len(keys)}:
        return False
    checks = _column_checks(info)
    for key in keys:
        try:
            column = list(map(operator.itemgetter(key), batch))
        except KeyError:
            return False
        check = checks.get(key)
        if check is not None and not check(column):
            return False
    return True


def batch_values(
    info: ModelInfo, batch: Sequence[Any], first: int, *, read_only: bool = False
) -> tuple[list[dict[str, Any]], bool]:
    """``[with_defaults(info, row_values(info, row, first + i)) ...]`` for a batch, and
    whether every row is known to name the same fields (see :func:`iter_values`)."""
    values, same_keys = iter_values(info, batch, first, read_only=read_only)
    return list(values), same_keys


def iter_values(
    info: ModelInfo, batch: Sequence[Any], first: int, *, read_only: bool = False
) -> tuple[Iterable[dict[str, Any]], bool]:
    """The rows of ``batch`` checked and with their defaults filled, and whether every
    row is known to name the same fields.

    When the checks would return the rows unchanged (:func:`_as_they_are`) they are
    copied as they are and the defaults filled once for the batch. Otherwise (a model
    instance, a string to convert, a bool for an integer, an unknown field, a row
    naming other fields...) each row goes through :func:`row_values` as it is read,
    with its conversions and its errors naming the row, in row order.

    ``read_only``: the caller only reads the rows (COPY turns them into tuples), so
    rows that need no default are handed over without a copy.
    """
    if not _as_they_are(info, batch):
        return (
            with_defaults(info, row_values(info, row, first + i)) for i, row in enumerate(batch)
        ), False
    keys = batch[0].keys()
    missing = [item for item in _python_defaults(info) if item[0] not in keys]
    if any(is_callable for _, is_callable, _ in missing):
        return [with_defaults(info, row.copy()) for row in batch], True
    if missing:
        constants = {key: value for key, _, value in missing}
        return [{**row, **constants} for row in batch], True
    return (list(batch) if read_only else [row.copy() for row in batch]), True


def with_defaults(info: ModelInfo, values: dict[str, Any]) -> dict[str, Any]:
    """Fill Python-side column defaults, so every row of a batch has the same keys and
    the audit log sees the values that were really written."""
    for key, is_callable, default in _python_defaults(info):
        if key not in values:
            if not is_callable:
                values[key] = default
                continue
            try:  # noqa: SIM105 - per row, suppress() cost 2-3x a try that does not raise
                values[key] = default(None)
            except TypeError:  # needs an execution context: SQLAlchemy's INSERT fills it
                pass
    return values


def to_columns(info: ModelInfo, values: Mapping[str, Any]) -> dict[str, Any]:
    if info.names_are_columns:
        return values if isinstance(values, dict) else dict(values)
    mapping = info.attr_to_column
    return {mapping[k].key: v for k, v in values.items()}
