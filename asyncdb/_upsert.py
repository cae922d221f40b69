"""INSERT ... ON CONFLICT DO UPDATE: upsert of one row or many, with their audit rows.

MariaDB/MySQL have ``INSERT ... ON DUPLICATE KEY UPDATE`` instead, without RETURNING:
the rows are read back by their conflict columns in the same transaction. On PostgreSQL
a batch goes as ``INSERT ... SELECT FROM unnest(...)``, one array per column, where the
column types allow (:mod:`._upsert_unnest`).

The conflict target must be the primary key or a unique constraint (checked before any
SQL); each upserted row gets an UPSERT audit row with what it inserted or changed.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import null, select, tuple_
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ._audit import audit_row, entity_id_of, write_audit_rows
from ._audit_model import AuditAction
from ._bulk import as_attrs, chunks, execute_batch, group_by_keys, written
from ._bulk_rows import iter_values, to_columns, with_defaults
from ._changes import record_changes
from ._context import AuditContext
from ._errors import (
    ValidationError,
)
from ._model_info import ModelInfo
from ._models import utcnow
from ._session import attempt_in_savepoint
from ._upsert_unnest import can_unnest, unnest_params, unnest_source

__all__ = ["check_conflict_target", "upsert_one", "upsert_rows"]

# Largest number of rows replayed one by one to find the one the database rejected.
_DIAGNOSE_LIMIT = 10_000


def _upsert_audit(
    info: ModelInfo,
    key: tuple[Any, ...],
    context: Any,
    old: Mapping[str, Any] | None,
    new: dict[str, Any],
) -> dict[str, Any]:
    """The UPSERT audit row: all values for an insert, only what changed for an update."""
    if old is not None:
        new = {k: v for k, v in new.items() if old.get(k) != v}
        old = {k: old.get(k) for k in new}
    return audit_row(
        info.model, AuditAction.UPSERT, entity_id_of(key), context, old=old, new=new, changed=new
    )


def check_conflict_target(
    info: ModelInfo, conflict_on: Sequence[str], values: Mapping[str, Any] | None
) -> list[str]:
    """``conflict_on`` must name the primary key or a unique constraint or index."""
    if isinstance(conflict_on, str) or not conflict_on:
        msg = "conflict_on must be a non-empty list of column names, e.g. conflict_on=['email']."
        raise ValidationError(msg)
    names = list(conflict_on)
    info.check_columns(names, what="conflict_on column")
    columns = info.attr_to_column
    wanted = {columns[n].key for n in names}
    if wanted not in info.unique_sets:
        msg = (
            f"conflict_on={names} is neither the primary key nor a unique constraint of "
            f"{info.model.__name__}. Name the columns of one of its unique constraints."
        )
        raise ValidationError(msg)
    if values is not None:
        missing = [n for n in names if n not in values]
        if missing:
            msg = f"upsert values must include the conflict_on column(s) {missing}."
            raise ValidationError(msg)
    return names


def _dialect_insert(session: AsyncSession, target: Any) -> Any:
    name = session.get_bind().dialect.name
    if name in ("postgresql", "duckdb"):  # DuckDB speaks PostgreSQL's ON CONFLICT
        return postgresql.insert(target)
    if name in _DUPLICATE_KEY_DIALECTS:
        return mysql.insert(target)
    return sqlite.insert(target)


_DUPLICATE_KEY_DIALECTS = ("mysql", "mariadb")


def _duplicate_key_dialect(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name in _DUPLICATE_KEY_DIALECTS


def _set_clause(
    info: ModelInfo, ins: Any, keys: Iterable[str], conflict: Sequence[str]
) -> dict[str, Any]:
    columns = info.attr_to_column
    skip = set(conflict) | set(info.pk_names) | {"created_at"}
    # ON CONFLICT's EXCLUDED row; ON DUPLICATE KEY UPDATE calls it ``inserted``.
    excluded = ins.excluded if hasattr(ins, "excluded") else ins.inserted
    set_ = {columns[k].key: excluded[columns[k].key] for k in keys if k not in skip}
    if info.has_updated_at:
        set_[columns["updated_at"].key] = excluded[columns["updated_at"].key]
    if info.soft_delete and "deleted_at" not in set_:
        # An upsert brings a soft-deleted row back. null(), not None: a bound parameter
        # outside VALUES stops SQLAlchemy from batching the rows into one INSERT.
        set_[columns["deleted_at"].key] = null()
    if not set_:
        # A no-op update, so that RETURNING still yields the existing row.
        first = columns[conflict[0]].key
        set_[first] = excluded[first]
    return set_


def _on_conflict(info: ModelInfo, ins: Any, keys: Iterable[str], conflict: Sequence[str]) -> Any:
    """``ins`` ON CONFLICT (``conflict``) DO UPDATE SET the other columns of ``keys``."""
    return ins.on_conflict_do_update(
        index_elements=[info.attr_to_column[n] for n in conflict],
        set_=_set_clause(info, ins, keys, conflict),
    )


async def upsert_one(
    info: ModelInfo,
    session: AsyncSession,
    values: dict[str, Any],
    conflict: Sequence[str],
    context: AuditContext | None,
) -> Any:
    """upsert: INSERT ... ON CONFLICT (conflict) DO UPDATE ... RETURNING the row."""
    values = with_defaults(info, values)
    if info.has_updated_at:
        values["updated_at"] = utcnow()
    old: dict[str, Any] | None = None
    if context is not None:
        where = [getattr(info.model, n) == values[n] for n in conflict]
        found = (await session.execute(select(info.table).where(*where))).mappings().first()
        if found is not None:
            old = as_attrs(info, found)
    ins = _dialect_insert(session, info.model)
    if _duplicate_key_dialect(session):
        # No RETURNING here: read the row back. The set clause reads ``inserted`` of the
        # very statement it belongs to.
        with_values = ins.values(**values)
        await session.execute(
            with_values.on_duplicate_key_update(_set_clause(info, with_values, values, conflict))
        )
        where = [getattr(info.model, n) == values[n] for n in conflict]
        result = await session.scalars(
            select(info.model).where(*where), execution_options={"populate_existing": True}
        )
    else:
        stmt = _on_conflict(info, ins.values(**values), values, conflict)
        result = await session.scalars(
            stmt.returning(info.model), execution_options={"populate_existing": True}
        )
    obj = result.one()
    key = info.key_of(obj)
    if context is not None:
        new = {k: getattr(obj, k) for k in info.columns}
        row = _upsert_audit(info, key, context, old, new)
        await session.run_sync(write_audit_rows, [row])
    record_changes(session.sync_session, info.model, [key])
    return obj


async def _run_batch(
    session: AsyncSession,
    upsert: Any,
    unnest: Any,
    params: list[dict[str, Any]],
    first_row: int,
    returning: Sequence[Any] = (),
) -> Any:
    """One batch: as ``unnest`` (:mod:`._upsert_unnest`) when given, in a SAVEPOINT; as
    multi-row ``upsert`` when not, or when the server refused it (that path names the
    row the database rejects)."""
    if unnest is not None:
        stmt = unnest.returning(*returning) if returning else unnest
        result = await attempt_in_savepoint(
            session, lambda: session.execute(stmt, unnest_params(params, list(params[0])))
        )
        if result is not None:
            return result
        # rolled back to the SAVEPOINT: replayed below, row by row if need be
    stmt = upsert.returning(*returning) if returning else upsert
    return await execute_batch(session, stmt, params, first_row)


async def _upsert_batch(
    info: ModelInfo,
    session: AsyncSession,
    upsert: Any,
    group: list[tuple[int, dict[str, Any]]],
    conflict: Sequence[str],
    unnest: Any = None,
) -> list[tuple[Any, ...]]:
    """Run one batch as multi-row INSERT ... ON CONFLICT; the keys, in ``group``'s order.

    On the primary key the keys are the rows' own, and nothing is returned. Otherwise
    RETURNING carries the conflict columns beside the primary key, so each returned row
    is matched to its input by its conflict values and the database need not return
    rows in parameter order. (SQLite does not promise that order, and asking SQLAlchemy
    for it there means one statement per row.) A row whose conflict values come back
    different (a case-insensitive collation keeping the stored spelling) is matched by
    running its upsert again with ordered RETURNING: the same values, so the same row.
    """
    params = [to_columns(info, values) for _, values in group]
    pk_names = info.pk_names
    if set(conflict) == set(pk_names):
        await _run_batch(session, upsert, unnest, params, group[0][0])
        return [tuple(values[n] for n in pk_names) for _, values in group]
    columns = info.attr_to_column
    extra = [n for n in conflict if n not in pk_names]
    returning = [*info.pk_columns, *(columns[n] for n in extra)]
    result = await _run_batch(session, upsert, unnest, params, group[0][0], returning)
    width = len(pk_names)
    where = {name: width + i for i, name in enumerate(extra)}
    where.update({name: i for i, name in enumerate(pk_names)})
    by_target = {tuple(row[where[n]] for n in conflict): tuple(row[:width]) for row in result}
    keys: list[tuple[Any, ...] | None] = [
        by_target.get(tuple(values[n] for n in conflict)) for _, values in group
    ]
    unmatched = [i for i, key in enumerate(keys) if key is None]
    if unmatched:
        ordered = upsert.returning(*info.pk_columns, sort_by_parameter_order=True)
        again = await execute_batch(
            session, ordered, [params[i] for i in unmatched], group[unmatched[0]][0]
        )
        for i, row in zip(unmatched, again.all(), strict=True):
            keys[i] = tuple(row)
    return [key for key in keys if key is not None]


async def upsert_rows(
    info: ModelInfo,
    session: AsyncSession,
    rows: Iterable[Any],
    conflict: Sequence[str],
    batch_size: int,
    context: AuditContext | None,
) -> int:
    """bulk_upsert: one multi-row INSERT ... ON CONFLICT DO UPDATE per batch."""
    table = info.table
    columns = info.attr_to_column
    seen: dict[tuple[Any, ...], int] = {}
    total = 0
    for batch_no, batch in enumerate(chunks(rows, batch_size)):
        first = batch_no * batch_size
        prepared = []
        checked, same_keys = iter_values(info, batch, first)
        # Rows naming the same fields lack the same conflict columns: the first says.
        check_each = not same_keys
        pick = operator.itemgetter(*conflict) if len(conflict) > 1 else None
        for i, values in enumerate(checked):
            if check_each or i == 0:
                missing = [n for n in conflict if n not in values]
                if missing:
                    msg = (
                        f"Row {first + i}: bulk_upsert rows need the conflict_on "
                        f"column(s) {missing}."
                    )
                    raise ValidationError(msg)
            if info.has_updated_at:
                values["updated_at"] = utcnow()
            target = pick(values) if pick is not None else (values[conflict[0]],)
            if target in seen:
                msg = (
                    f"Row {first + i} repeats the conflict_on values of row {seen[target]}; "
                    "a row can be upserted once per call. Merge the two rows."
                )
                raise ValidationError(msg)
            seen[target] = first + i
            prepared.append((first + i, values))
        old_rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        if context is not None:
            targets = [tuple(v[n] for n in conflict) for _, v in prepared]
            cols = [columns[n] for n in conflict]
            cond = (
                cols[0].in_([t[0] for t in targets])
                if len(cols) == 1
                else tuple_(*cols).in_(targets)
            )
            for found in (await session.execute(select(table).where(cond))).mappings():
                values = as_attrs(info, found)
                old_rows[tuple(values[n] for n in conflict)] = values
        for group in [prepared] if same_keys else group_by_keys(prepared):
            ins = _dialect_insert(session, table)
            if _duplicate_key_dialect(session):
                keys = await _upsert_group_duplicate_key(info, session, ins, group, conflict)
            else:
                upsert = _on_conflict(info, ins, group[0][1], conflict)
                keys = await _upsert_batch(
                    info, session, upsert, group, conflict, _unnest(info, session, group, conflict)
                )
            if context is not None:
                audit = [
                    _upsert_audit(
                        info,
                        key,
                        context,
                        old_rows.get(tuple(values[n] for n in conflict)),
                        {**values, **dict(zip(info.pk_names, key, strict=False))},
                    )
                    for key, (_, values) in zip(keys, group, strict=False)
                ]
                await session.run_sync(write_audit_rows, audit)
            written(info, session, keys)
            total += len(group)
    return total


def _unnest(
    info: ModelInfo,
    session: AsyncSession,
    group: list[tuple[int, dict[str, Any]]],
    conflict: Sequence[str],
) -> Any:
    """The group's ``INSERT … SELECT FROM unnest(…) ON CONFLICT`` (:mod:`._upsert_unnest`),
    or None where it does not apply (another backend, a column type it does not carry)."""
    names = [info.attr_to_column[k].key for k in group[0][1]]
    if not can_unnest(session, info.table, names):
        return None
    ins = postgresql.insert(info.table).from_select(names, unnest_source(info.table, names))
    return _on_conflict(info, ins, group[0][1], conflict)


async def _upsert_group_duplicate_key(
    info: ModelInfo,
    session: AsyncSession,
    ins: Any,
    group: list[tuple[int, dict[str, Any]]],
    conflict: Sequence[str],
) -> list[tuple[Any, ...]]:
    """One executemany INSERT ... ON DUPLICATE KEY UPDATE, then the keys in row order."""
    columns = info.attr_to_column
    stmt = ins.on_duplicate_key_update(_set_clause(info, ins, group[0][1], conflict))
    params = [to_columns(info, values) for _, values in group]
    await execute_batch(session, stmt, params, group[0][0])
    targets = [tuple(values[n] for n in conflict) for _, values in group]
    cols = [columns[n] for n in conflict]
    cond = cols[0].in_([t[0] for t in targets]) if len(cols) == 1 else tuple_(*cols).in_(targets)
    found = await session.execute(select(*cols, *info.pk_columns).where(cond))
    width = len(cols)
    by_target = {tuple(r[:width]): tuple(r[width:]) for r in found.all()}
    return [by_target[t] for t in targets]
