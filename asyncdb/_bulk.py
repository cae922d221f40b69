"""The repository's bulk and upsert operations: Core DML in batches, near driver speed.

Each batch runs inside its own SAVEPOINT, so when the database rejects a batch the
failing row can be found (by replaying the batch one row at a time, then undoing
that) and named in the error; the repository wraps the whole call in one more
SAVEPOINT, so nothing of a failed call is written.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from ._audit import audit_row, entity_id_of, write_audit_rows
from ._audit_model import AuditAction
from ._bulk_rows import batch_values, row_values, to_columns, with_defaults
from ._capabilities import supports
from ._changes import record_changes
from ._context import AuditContext
from ._copy import can_copy, copy_batch, copy_leading
from ._errors import (
    AsyncDBError,
    ConflictError,
    DatabaseUnavailableError,
    NotFoundError,
    TransactionError,
    ValidationError,
)
from ._insert_tuples import can_send_tuples, insert_tuples, insert_tuples_returning
from ._model_info import ModelInfo
from ._models import utcnow

__all__ = [
    "as_attrs",
    "chunks",
    "delete_rows",
    "execute_batch",
    "group_by_keys",
    "insert_rows",
    "update_rows",
    "with_defaults",  # lives in _bulk_rows; kept here for its callers
    "written",
]

# Largest number of rows replayed one by one to find the one the database rejected.
_DIAGNOSE_LIMIT = 10_000


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


#: Most primary-key parameters in one ``WHERE pk IN (...)``: well below every backend's
#: limit on bound parameters (32,767 on PostgreSQL, 32,766 on SQLite).
MAX_KEYS_PER_STATEMENT = 10_000


def _key_batch(info: ModelInfo, batch_size: int) -> int:
    """``batch_size``, lowered so that a batch's keys fit in one statement."""
    return max(1, min(batch_size, MAX_KEYS_PER_STATEMENT // len(info.pk_columns)))


def _relabel(exc: AsyncDBError, where: str) -> AsyncDBError:
    """The same error with the failing rows named; a conflict keeps its constraint."""
    message = f"{where}: {exc}"
    if isinstance(exc, ConflictError):
        return ConflictError(message, sqlstate=exc.sqlstate, constraint=exc.constraint)
    return type(exc)(message, sqlstate=exc.sqlstate)


async def execute_batch(
    session: AsyncSession, stmt: Any, params: list[dict[str, Any]], first_row: int
) -> Any:
    """Run one executemany batch in a SAVEPOINT; on failure, name the row that failed."""
    if not supports(session.get_bind().dialect.name, "savepoint"):
        # DuckDB: no savepoint to replay the rows in; the batch fails as a whole (and a
        # failed statement aborts the transaction: nothing of the call is written).
        try:
            return await session.execute(stmt, params)
        except (DatabaseUnavailableError, TransactionError):
            raise
        except AsyncDBError as exc:
            raise _relabel(exc, f"Rows {first_row}-{first_row + len(params) - 1}") from exc
    try:
        async with session.begin_nested():
            return await session.execute(stmt, params)
    except (DatabaseUnavailableError, TransactionError):
        raise  # not the rows' fault: probing them row by row would only wait again
    except AsyncDBError as exc:
        bad = await _find_bad_row(session, stmt, params)
        if bad is None:
            raise _relabel(exc, f"Rows {first_row}-{first_row + len(params) - 1}") from exc
        raise _relabel(exc, f"Row {first_row + bad}") from exc


async def _find_bad_row(
    session: AsyncSession, stmt: Any, params: list[dict[str, Any]]
) -> int | None:
    probe = await session.begin_nested()
    try:
        for i, param in enumerate(params[:_DIAGNOSE_LIMIT]):
            try:
                async with session.begin_nested():
                    await session.execute(stmt, [param])
            except AsyncDBError:
                return i
        return None
    finally:
        await probe.rollback()


def group_by_keys(
    params: list[tuple[int, dict[str, Any]]],
) -> list[list[tuple[int, dict[str, Any]]]]:
    if not params:
        return []
    first = params[0][1].keys()
    width = len(first)
    if all(len(item[1]) == width and item[1].keys() >= first for item in params):
        return [params]  # the usual case: every row names the same fields
    groups: dict[frozenset[str], list[tuple[int, dict[str, Any]]]] = {}
    for item in params:
        groups.setdefault(frozenset(item[1]), []).append(item)
    return list(groups.values())


def _pk_in(info: ModelInfo, keys: Sequence[tuple[Any, ...]]) -> Any:
    if len(info.pk_columns) == 1:
        return info.pk_columns[0].in_([k[0] for k in keys])
    return tuple_(*info.pk_columns).in_(keys)


def _evict(info: ModelInfo, session: AsyncSession, keys: Iterable[tuple[Any, ...]]) -> None:
    """Drop stale copies of rows changed by Core DML from the session's identity map."""
    sync = session.sync_session
    if not sync.identity_map:
        return  # the usual standalone call: nothing loaded, nothing stale
    for key in keys:
        obj = sync.identity_map.get(sync.identity_key(info.model, key))
        if obj is not None:
            sync.expunge(obj)


def written(info: ModelInfo, session: AsyncSession, keys: list[tuple[Any, ...]]) -> None:
    """Rows changed by Core DML: drop their stale ORM copies and log them for the cache."""
    _evict(info, session, keys)
    record_changes(session.sync_session, info.model, keys)


def as_attrs(info: ModelInfo, row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row read by column name, keyed by the model's attribute names."""
    by_column = info.column_to_attr
    return {by_column[k]: v for k, v in row.items()}


def _key(info: ModelInfo, values: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(values.get(name) for name in info.pk_names)


# -- insert ------------------------------------------------------------------------------


async def insert_rows(
    info: ModelInfo,
    session: AsyncSession,
    rows: Iterable[Any],
    batch_size: int,
    context: AuditContext | None,
    own: bool = False,
) -> int:
    """bulk_create: COPY per batch on PostgreSQL when no audit row needs the new ids,
    else executemany INSERT (multi-VALUES on both backends).

    ``own``: the session's transaction is the call's own. Until the call has written
    something, a COPY then needs no SAVEPOINT: a refused one rolls back that
    transaction, which holds nothing, and the rows go again as INSERT (see _copy).
    """
    copy = context is None and can_copy(session, info)
    fresh = own and copy  # nothing of the call written yet
    start = 0
    if copy and isinstance(rows, (list, tuple)):
        start = await copy_leading(info, session, rows, batch_size, own=fresh)
        rows = itertools.islice(rows, start, None)
        fresh = fresh and start == 0
    total = start
    for batch_no, batch in enumerate(chunks(rows, batch_size)):
        first = start + batch_no * batch_size
        prepared = list(enumerate(batch_values(info, batch, first)[0], first))
        for group in group_by_keys(prepared):
            params = [to_columns(info, values) for _, values in group]
            if context is None:
                await _insert_plain(info, session, params, group[0][0], copy=copy, own=fresh)
                fresh = False
                keys: list[tuple[Any, ...]] | None = None
            else:
                keys = await _insert_returning_keys(info, session, params, group[0][0])
                audit = [
                    audit_row(
                        info.model,
                        AuditAction.BULK_CREATE,
                        entity_id_of(key),
                        context,
                        new={**values, **dict(zip(info.pk_names, key, strict=False))},
                        changed=values,
                    )
                    for key, (_, values) in zip(keys, group, strict=False)
                ]
                await session.run_sync(write_audit_rows, audit)
            total += len(group)
            record_changes(session.sync_session, info.model, keys)
    return total


async def _insert_plain(
    info: ModelInfo,
    session: AsyncSession,
    params: list[dict[str, Any]],
    first_row: int,
    *,
    copy: bool,
    own: bool,
) -> None:
    """A batch with no audit rows to write: COPY on PostgreSQL, tuples on SQLite
    (:mod:`._insert_tuples`), else executemany INSERT; the last also replays a batch
    the others could not write, naming the failing row."""
    table = info.table
    if copy and await copy_batch(info, session, table, params, own=own):
        return
    if can_send_tuples(session, info, list(params[0])) and await insert_tuples(
        session, table, params
    ):
        return
    await execute_batch(session, insert(table), params, first_row)


async def _insert_returning_keys(
    info: ModelInfo, session: AsyncSession, params: list[dict[str, Any]], first_row: int
) -> list[tuple[Any, ...]]:
    """INSERT a batch whose audit rows need the new keys: the keys, in the rows' order.
    On SQLite one trip of tuples (:mod:`._insert_tuples`; SQLAlchemy sends such a batch
    one statement per row there, as SQLite does not promise RETURNING's order of a
    multi-row INSERT), else SQLAlchemy's INSERT ... RETURNING in parameter order."""
    if can_send_tuples(session, info, list(params[0])):
        keys = await insert_tuples_returning(session, info.table, params, info.pk_columns)
        if keys is not None:
            return keys
    stmt = insert(info.table).returning(*info.pk_columns, sort_by_parameter_order=True)
    result = await execute_batch(session, stmt, params, first_row)
    return [tuple(row) for row in result.all()]


# -- update ------------------------------------------------------------------------------


async def update_rows(
    info: ModelInfo,
    session: AsyncSession,
    rows: Iterable[Any],
    batch_size: int,
    context: AuditContext | None,
) -> int:
    """bulk_update: check the ids exist, then executemany UPDATE ... WHERE pk = ?"""
    batch_size = _key_batch(info, batch_size)  # each batch's ids are loaded in one IN (...)
    table = info.table
    columns = info.attr_to_column
    stamp = info.has_updated_at
    total = 0
    stamped_by_caller: set[str] = set()
    for batch_no, batch in enumerate(chunks(rows, batch_size)):
        first = batch_no * batch_size
        prepared: list[tuple[int, tuple[Any, ...], dict[str, Any]]] = []
        for i, row in enumerate(batch):
            values = row_values(info, row, first + i)
            key = _key(info, values)
            if any(v is None for v in key):
                msg = (
                    f"Row {first + i}: each row of bulk_update needs its primary key "
                    f"{list(info.pk_names)}."
                )
                raise ValidationError(msg)
            changes = {k: v for k, v in values.items() if k not in info.pk_names}
            if "updated_at" in changes:
                stamped_by_caller.add("updated_at")
            if stamp and "updated_at" not in changes:
                changes["updated_at"] = utcnow()
            prepared.append((first + i, key, changes))
        keys = [key for _, key, _ in prepared]
        existing = await _load_existing(info, session, keys, context is not None)
        for index, key, _ in prepared:
            if key not in existing:
                msg = (
                    f"Row {index}: no {info.model.__name__} with id "
                    f"{key[0] if len(key) == 1 else key!r}. "
                    "Nothing was updated."
                )
                raise NotFoundError(msg)
        groups: dict[frozenset[str], list[tuple[int, tuple[Any, ...], dict[str, Any]]]] = {}
        for item in prepared:
            groups.setdefault(frozenset(item[2]), []).append(item)
        for names, group in groups.items():
            if not names:
                continue
            where = [col == bindparam(f"_pk_{i}") for i, col in enumerate(info.pk_columns)]
            stmt = (
                update(table)
                .where(*where)
                .values({columns[n].key: bindparam(f"_v_{n}") for n in names})
            )
            params = [
                {
                    **{f"_pk_{i}": v for i, v in enumerate(key)},
                    **{f"_v_{n}": changes[n] for n in names},
                }
                for _, key, changes in group
            ]
            await execute_batch(session, stmt, params, group[0][0])
        if context is not None:
            audit = []
            for _, key, changes in prepared:
                old_row = existing[key]
                # The automatic updated_at stamp is not a change the caller made (the
                # single-row path does not log it either).
                changed = {
                    k: v
                    for k, v in changes.items()
                    if old_row.get(k) != v and (k != "updated_at" or k in stamped_by_caller)
                }
                if changed:
                    old = {k: old_row.get(k) for k in changed}
                    audit.append(
                        audit_row(
                            info.model,
                            AuditAction.BULK_UPDATE,
                            entity_id_of(key),
                            context,
                            old=old,
                            new=changed,
                            changed=changed,
                        )
                    )
            await session.run_sync(write_audit_rows, audit)
        written(info, session, keys)
        total += len(prepared)
    return total


async def _load_existing(
    info: ModelInfo, session: AsyncSession, keys: Sequence[tuple[Any, ...]], full: bool
) -> dict[tuple[Any, ...], dict[str, Any]]:
    table = info.table
    cols = list(table.c) if full else list(info.pk_columns)
    stmt = select(*cols).where(_pk_in(info, keys))
    if info.soft_delete:
        stmt = stmt.where(table.c.deleted_at.is_(None))
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in (await session.execute(stmt)).mappings():
        values = as_attrs(info, row)
        found[_key(info, values)] = values
    return found


# -- delete ------------------------------------------------------------------------------


async def delete_rows(
    info: ModelInfo,
    session: AsyncSession,
    idents: Sequence[Any],
    soft: bool,
    batch_size: int,
    context: AuditContext | None,
) -> int:
    """bulk_delete: one UPDATE (soft) or DELETE (hard) ... WHERE pk IN (...) per batch."""
    table = info.table
    total = 0
    for batch in chunks(idents, _key_batch(info, batch_size)):
        keys = [info.pk_tuple(i) for i in batch]
        old_rows = await _load_existing(info, session, keys, True) if context is not None else {}
        now = utcnow()
        if soft:
            values: dict[str, Any] = {"deleted_at": now}
            if info.has_updated_at:
                values["updated_at"] = now
            plain: Any = (
                update(table).where(_pk_in(info, keys), table.c.deleted_at.is_(None)).values(values)
            )
            stmt: Any = plain.returning(*info.pk_columns)
        else:
            stmt = delete(table).where(_pk_in(info, keys)).returning(*info.pk_columns)
        if soft and not session.get_bind().dialect.update_returning:
            # MariaDB/MySQL: no UPDATE ... RETURNING; lock and read the keys it will change.
            live = select(*info.pk_columns).where(_pk_in(info, keys), table.c.deleted_at.is_(None))
            done = [tuple(r) for r in (await session.execute(live.with_for_update())).all()]
            await session.execute(plain)
        else:
            done = [tuple(r) for r in (await session.execute(stmt)).all()]
        if context is not None:
            audit = []
            for key in done:
                old = old_rows.get(key)
                if soft:
                    audit.append(
                        audit_row(
                            info.model,
                            AuditAction.BULK_DELETE,
                            entity_id_of(key),
                            context,
                            old={"deleted_at": None},
                            new={"deleted_at": now},
                            changed=["deleted_at"],
                        )
                    )
                else:
                    audit.append(
                        audit_row(
                            info.model,
                            AuditAction.BULK_DELETE,
                            entity_id_of(key),
                            context,
                            old=old or {},
                        )
                    )
            await session.run_sync(write_audit_rows, audit)
        written(info, session, done)
        total += len(done)
    return total


# -- upsert ------------------------------------------------------------------------------
