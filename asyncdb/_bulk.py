"""The repository's bulk and upsert operations: Core DML in batches, near driver speed.

Each batch runs inside its own SAVEPOINT, so when the database rejects a batch the
failing row can be found (by replaying the batch one row at a time, then undoing
that) and named in the error; the repository wraps the whole call in one more
SAVEPOINT, so nothing of a failed call is written.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from ._audit import audit_row, entity_id_of, write_audit_rows
from ._audit_model import AuditAction
from ._capabilities import supports
from ._changes import record_changes
from ._context import AuditContext
from ._copy import (
    COPY_MIN_ROWS,
    bind_processors,
    can_copy,
    copy_batch,
    copy_records,
    copyable,
    records_of,
)
from ._errors import (
    AsyncDBError,
    ConflictError,
    DatabaseUnavailableError,
    NotFoundError,
    TransactionError,
    ValidationError,
)
from ._model_info import ModelInfo
from ._models import utcnow
from ._values import ColumnCheck, coerce_values, column_check_for

__all__ = [
    "as_attrs",
    "batch_values",
    "chunks",
    "delete_rows",
    "execute_batch",
    "group_by_keys",
    "insert_rows",
    "row_values",
    "to_columns",
    "update_rows",
    "with_defaults",
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
    # One pass each in C: every row a dict, every row with the same keys.
    if set(map(type, batch)) != {dict} or not all(map(keys.__eq__, map(dict.keys, batch))):
        return False
    checks = _column_checks(info)
    return all(
        checks[key](list(map(operator.itemgetter(key), batch))) for key in keys if key in checks
    )


def batch_values(
    info: ModelInfo, batch: Sequence[Any], first: int
) -> tuple[list[dict[str, Any]], bool]:
    """``[with_defaults(info, row_values(info, row, first + i)) ...]`` for a batch, and
    whether every row is known to name the same fields.

    When the checks would return the rows unchanged (:func:`_as_they_are`) they are
    copied as they are and the defaults filled once for the batch. Otherwise (a model
    instance, a string to convert, a bool for an integer, an unknown field, a row
    naming other fields...) every row goes through :func:`row_values`, with its
    conversions and its errors naming the row.
    """
    if not _as_they_are(info, batch):
        checked = [row_values(info, row, first + i) for i, row in enumerate(batch)]
        return [with_defaults(info, values) for values in checked], False
    keys = batch[0].keys()
    missing = [item for item in _python_defaults(info) if item[0] not in keys]
    if any(is_callable for _, is_callable, _ in missing):
        return [with_defaults(info, row.copy()) for row in batch], True
    if missing:
        constants = {key: value for key, _, value in missing}
        return [{**row, **constants} for row in batch], True
    return [row.copy() for row in batch], True


def with_defaults(info: ModelInfo, values: dict[str, Any]) -> dict[str, Any]:
    """Fill Python-side column defaults, so every row of a batch has the same keys and
    the audit log sees the values that were really written."""
    for key, is_callable, default in _python_defaults(info):
        if key not in values:
            if not is_callable:
                values[key] = default
                continue
            with contextlib.suppress(TypeError):  # needs an execution context: SQLAlchemy's
                values[key] = default(None)
    return values


def to_columns(info: ModelInfo, values: Mapping[str, Any]) -> dict[str, Any]:
    if info.names_are_columns:
        return values if isinstance(values, dict) else dict(values)
    mapping = info.attr_to_column
    return {mapping[k].key: v for k, v in values.items()}


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
) -> int:
    """bulk_create: COPY per batch on PostgreSQL when no audit row needs the new ids,
    else executemany INSERT (multi-VALUES on both backends)."""
    table = info.table
    copy = context is None and can_copy(session, info)
    start = 0
    if copy and isinstance(rows, (list, tuple)):
        start = await _copy_leading(info, session, rows, batch_size)
        rows = itertools.islice(rows, start, None)
    total = start
    for batch_no, batch in enumerate(chunks(rows, batch_size)):
        first = start + batch_no * batch_size
        prepared = list(enumerate(batch_values(info, batch, first)[0], first))
        for group in group_by_keys(prepared):
            params = [to_columns(info, values) for _, values in group]
            if context is None:
                if not (copy and await copy_batch(info, session, table, params)):
                    await execute_batch(session, insert(table), params, group[0][0])
                keys: list[tuple[Any, ...]] | None = None
            else:
                stmt = insert(table).returning(*info.pk_columns, sort_by_parameter_order=True)
                result = await execute_batch(session, stmt, params, group[0][0])
                keys = [tuple(r) for r in result.all()]
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


def _copy_params(info: ModelInfo, batch: Sequence[Any], first: int) -> list[dict[str, Any]] | None:
    """A batch's rows as the batch-by-batch path would send them (checked, defaults
    filled, by column key), or None when that path must take the batch: a row the checks
    refuse or anything else that raises (that path raises it again, naming the row), or
    rows naming different fields."""
    try:
        values, same_keys = batch_values(info, batch, first)
    except Exception:
        return None
    params = values if info.names_are_columns else [to_columns(info, v) for v in values]
    if same_keys:
        return params
    keys = params[0].keys()
    return params if all(p.keys() == keys for p in params) else None


def _records(
    params: list[dict[str, Any]], names: list[str], processors: list[Any]
) -> list[tuple[Any, ...]] | None:
    try:
        return list(records_of(params, names, processors))
    except Exception:  # a bind processor refused a value: the batch path raises it again
        return None


async def _copy_leading(
    info: ModelInfo, session: AsyncSession, rows: Sequence[Any], batch_size: int
) -> int:
    """COPY the leading batches of a list in one COPY; how many rows it wrote.

    The batch-by-batch path pays a SAVEPOINT, a COPY and a RELEASE per batch (about four
    round trips); a list can go in one COPY, its batches checked and converted one at a
    time while the COPY streams (the memory of one batch, as before). Where the
    batch-by-batch path would stop copying (a batch below COPY_MIN_ROWS, a batch that
    fails its checks or names other fields) the stream ends before that batch and this
    returns how far it got; that path goes on from there, with the same checks and
    errors. A COPY the server refuses is rolled back (0): that path replays the list
    from its first row and names the row the database rejects, as before.
    """
    if len(rows) < COPY_MIN_ROWS or batch_size < COPY_MIN_ROWS or len(rows) <= batch_size:
        return 0  # one batch (or INSERTs): nothing to gain over the batch-by-batch path
    table = info.table
    head = _copy_params(info, rows[:batch_size], 0)
    if head is None or not copyable(info, list(head[0])):
        return 0
    names = list(head[0])
    processors = bind_processors(session, table, names)
    first_records = _records(head, names, processors)
    if first_records is None:
        return 0
    copied = 0

    def batches() -> Iterator[list[tuple[Any, ...]]]:
        # Never raises: asyncpg answers an exception here with a cancel request.
        nonlocal copied
        current: list[tuple[Any, ...]] | None = first_records
        while current is not None:
            yield current
            copied += len(current)
            batch = rows[copied : copied + batch_size]
            if len(batch) < COPY_MIN_ROWS:
                return
            params = _copy_params(info, batch, copied)
            if params is None or list(params[0]) != names:
                return
            current = _records(params, names, processors)

    records = itertools.chain.from_iterable(batches())
    if not await copy_records(session, table, names, records):
        return 0
    record_changes(session.sync_session, info.model, None)
    return copied


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
