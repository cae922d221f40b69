"""bulk_create through PostgreSQL's COPY, on the session's own connection and transaction.

A batch whose rows need nothing back (no audit row needs their ids) goes to the server
with asyncpg's ``copy_records_to_table``: the binary COPY protocol, no SQL text per row
and no per-row parameter processing in SQLAlchemy. The values are the ones the INSERT
path would send: validated, Python-side defaults (timestamps) filled in, and each passed
through its column type's bind processor (a ``TypeDecorator`` such as ``UTCDateTime``,
an ``Enum``, JSON). COPY runs inside a SAVEPOINT of the session's transaction, so a
rejected batch leaves nothing behind and the caller replays it through the INSERT path,
which names the failing row and raises the translated error. A standalone call's first
COPY (its transaction its own and still empty) needs no SAVEPOINT: a rejected one rolls
the whole transaction back instead, and the replay begins a new one.

A list (its rows already in memory) goes in one COPY whatever its batch size: its
batches are checked and converted one at a time while the COPY streams
(:func:`copy_leading`), sparing a SAVEPOINT, a COPY and a RELEASE per batch. A
generator keeps one COPY per batch, so only one batch is ever held.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from ._bulk_rows import batch_values, to_columns
from ._changes import record_changes
from ._model_info import ModelInfo
from ._session import attempt_in_savepoint

__all__ = [
    "COPY_MIN_ROWS",
    "bind_processors",
    "can_copy",
    "copy_batch",
    "copy_leading",
    "copy_records",
    "copyable",
    "records_of",
]

#: Below this many rows a batch goes as INSERT: COPY's extra round trip (the server
#: describes the table first) costs more than it saves on a handful of rows.
COPY_MIN_ROWS = 50


def can_copy(session: AsyncSession, info: ModelInfo) -> bool:
    """True when the session's database takes COPY through asyncpg."""
    bind = session.get_bind()
    return bind.dialect.name == "postgresql" and bind.dialect.driver == "asyncpg"


def _needs_sqlalchemy(info: ModelInfo, names: Sequence[str]) -> bool:
    """A column left out whose default only SQLAlchemy's INSERT can fill (a sequence, or
    a callable that needs the execution context)."""
    given = set(names)
    return any(
        col.default is not None and key not in given for key, col in info.attr_to_column.items()
    )


def bind_processors(session: AsyncSession, table: Table, names: Sequence[str]) -> list[Any]:
    """Each column's bind processor (None: the value goes as it is) on this dialect."""
    dialect = session.get_bind().dialect
    return [table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]


def records_of(
    params: Sequence[dict[str, Any]], names: Sequence[str], processors: Sequence[Any]
) -> Iterator[tuple[Any, ...]]:
    """The rows as COPY takes them: one tuple per row, values in ``names`` order, each
    passed through its column's bind processor."""
    if len(names) > 1 and all(process is None for process in processors):
        return map(operator.itemgetter(*names), params)  # a tuple per row, built in C
    columns = []
    for name, process in zip(names, processors, strict=True):
        values = [row[name] for row in params]
        columns.append(values if process is None else [process(v) for v in values])
    return zip(*columns, strict=True)


async def copy_batch(
    info: ModelInfo,
    session: AsyncSession,
    table: Table,
    params: list[dict[str, Any]],
    *,
    own: bool = False,
) -> bool:
    """COPY ``params`` (column keys → values, all rows with the same keys) into ``table``.

    False when the batch must go as INSERT instead: too small, a default only SQLAlchemy
    can fill, or the server refused the COPY (rolled back first). ``own``: as for
    :func:`copy_records`.
    """
    names = list(params[0])
    if len(params) < COPY_MIN_ROWS or not copyable(info, names):
        return False
    records = list(records_of(params, names, bind_processors(session, table, names)))
    return await copy_records(session, table, names, records, own=own)


def copyable(info: ModelInfo, names: Sequence[str]) -> bool:
    """False when a column left out has a default only SQLAlchemy's INSERT can fill."""
    return not _needs_sqlalchemy(info, [info.column_to_attr[n] for n in names])


async def copy_records(
    session: AsyncSession,
    table: Table,
    names: list[str],
    records: Iterable[tuple[Any, ...]],
    *,
    own: bool = False,
) -> bool:
    """One COPY of ``records`` (an iterable, read while the COPY streams) into ``table``,
    in a SAVEPOINT of the session's transaction. False when the server refused it: the
    SAVEPOINT is rolled back, nothing of it stays. ``records`` must not raise.

    ``own``: the session's transaction is the caller's own and holds nothing yet. The
    COPY then runs without a SAVEPOINT (two round trips fewer); a refused one rolls the
    transaction back, and the session begins a new one with its next statement.
    """
    await session.flush()  # as an INSERT's autoflush would: pending parents go first
    if own:
        driver = await _in_transaction(session)
        if driver is not None:
            try:
                await _copy_into(driver, table, names, records)
            except Exception:  # the INSERT replay raises the precise, translated error
                await session.rollback()  # the transaction held nothing else
                return False
            return True

    async def copy() -> bool:
        # A nested session transaction sends its SAVEPOINT when a connection is first
        # asked for: ask before the COPY, so a failure rolls back to it.
        driver = await _in_transaction(session)
        if driver is None:
            return False  # never COPY outside the session's transaction
        await _copy_into(driver, table, names, records)
        return True

    # Any exception: the driver's own come untranslated past SQLAlchemy, and the INSERT
    # replay raises the precise, translated error.
    return bool(await attempt_in_savepoint(session, copy, Exception))


async def _in_transaction(session: AsyncSession) -> Any:
    """The session's asyncpg connection, its transaction begun on the server; None in
    autocommit, or when BEGIN cannot be sent here (a SAVEPOINT or INSERT then sends it).

    SQLAlchemy's asyncpg adapter sends BEGIN with a transaction's first statement; the
    COPY goes past SQLAlchemy, so when it comes first its BEGIN is sent here.
    """
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if not driver.is_in_transaction():
        begin = getattr(raw.dbapi_connection, "_start_transaction", None)
        try:
            if begin is not None:
                await begin()
        except Exception:  # the INSERT path begins again and raises the translated error
            return None
    return driver if driver.is_in_transaction() else None


async def _copy_into(
    driver: Any, table: Table, names: list[str], records: Iterable[tuple[Any, ...]]
) -> None:
    await driver.copy_records_to_table(
        table.name, records=records, columns=names, schema_name=table.schema
    )


def _copy_params(info: ModelInfo, batch: Sequence[Any], first: int) -> list[dict[str, Any]] | None:
    """A batch's rows as the batch-by-batch path would send them (checked, defaults
    filled, by column key), or None when that path must take the batch: a row the checks
    refuse or anything else that raises (that path raises it again, naming the row), or
    rows naming different fields."""
    try:
        values, same_keys = batch_values(info, batch, first, read_only=True)
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


async def copy_leading(
    info: ModelInfo, session: AsyncSession, rows: Sequence[Any], batch_size: int, *, own: bool
) -> int:
    """COPY the leading batches of a list in one COPY; how many rows it wrote.

    The batch-by-batch path pays a SAVEPOINT, a COPY and a RELEASE per batch (about four
    round trips); a list can go in one COPY, its batches checked and converted one at a
    time while the COPY streams (the memory of one batch, as before). Where the
    batch-by-batch path would stop copying (a batch below COPY_MIN_ROWS, a batch that
    fails its checks or names other fields) the stream ends before that batch and this
    returns how far it got; that path goes on from there, with the same checks and
    errors. A COPY the server refuses is rolled back (0): that path replays the list
    from its first row and names the row the database rejects, as before. ``own``: as
    for :func:`copy_records`.
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
    if not await copy_records(session, table, names, records, own=own):
        return 0
    record_changes(session.sync_session, info.model, None)
    return copied
