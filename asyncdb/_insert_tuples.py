"""bulk_create on SQLite: each batch handed to the driver as tuples.

SQLAlchemy's executemany builds every row's parameters through its general machinery
(per row: a walk of the compiled statement's binds, the lookups of extracted values,
the type processing), which on SQLite costs more than sqlite3's own ``executemany``.
When every column a batch leaves out has no Python-side default for SQLAlchemy to
fill per row, asyncdb compiles the ``INSERT`` once per set of columns, passes each
value through its column's bind processor itself (exactly what SQLAlchemy would bind)
and sends the tuples through the session's connection: the same transaction, events
and metrics. A batch the database refuses is replayed through SQLAlchemy
(:func:`asyncdb._bulk.execute_batch`), which names the failing row.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession

from ._copy import bind_processors, copyable, records_of
from ._errors import AsyncDBError
from ._model_info import ModelInfo
from ._session import attempt_in_savepoint
from ._translate import translate_errors

__all__ = ["can_send_tuples", "insert_tuples", "insert_tuples_returning"]


def can_send_tuples(session: AsyncSession, info: ModelInfo, names: Sequence[str]) -> bool:
    """Whether a batch of rows with these column keys may go as tuples (SQLite, and no
    column left out that only SQLAlchemy's INSERT can fill)."""
    return session.get_bind().dialect.name == "sqlite" and copyable(info, names)


@functools.lru_cache(maxsize=256)
def _compiled(
    table: Table, names: tuple[str, ...], returning: tuple[Column[Any], ...], dialect: Dialect
) -> tuple[str, list[str]]:
    """The INSERT's SQL for these columns and the order its positional markers take."""
    stmt = insert(table).returning(*returning) if returning else insert(table)
    compiled = stmt.compile(dialect=dialect, column_keys=list(names))
    return compiled.string, list(compiled.positiontup or ())


class _Mismatch(Exception):
    """RETURNING gave another number of rows than were sent: undo the batch."""


async def insert_tuples(session: AsyncSession, table: Table, params: list[dict[str, Any]]) -> bool:
    """INSERT ``params`` (column keys → values, every row with the same keys) as one
    executemany of tuples, in a SAVEPOINT. False, with the SAVEPOINT rolled back, when
    the database refused the batch (or the statement's markers are not the row's keys):
    the caller replays it through SQLAlchemy, which names the failing row."""
    return await _send(session, table, params, ()) is not None


async def insert_tuples_returning(
    session: AsyncSession,
    table: Table,
    params: list[dict[str, Any]],
    returning: Sequence[Column[Any]],
) -> list[tuple[Any, ...]] | None:
    """As :func:`insert_tuples`, with ``INSERT ... RETURNING`` the ``returning`` columns:
    their values for each row, in the rows' order (each row its own statement, all in
    one trip to the driver's thread: :mod:`._sqlite_cursor`), or None when the batch
    must go through SQLAlchemy. The returned columns must need no type processing (an
    integer key, say): the values come back as the driver gives them."""
    dialect = session.get_bind().dialect
    if any(col.type.dialect_impl(dialect).result_processor(dialect, None) for col in returning):
        return None
    return await _send(session, table, params, tuple(returning))


async def _send(
    session: AsyncSession,
    table: Table,
    params: list[dict[str, Any]],
    returning: tuple[Column[Any], ...],
) -> list[tuple[Any, ...]] | None:
    names = tuple(params[0])
    dialect = session.get_bind().dialect
    sql, order = _compiled(table, names, returning, dialect)
    if sorted(order) != sorted(names):
        return None
    records = list(records_of(params, order, bind_processors(session, table, order)))
    await session.flush()  # as an INSERT's autoflush would: pending parents go first

    async def send() -> list[tuple[Any, ...]]:
        conn = await session.connection()  # in the nested transaction: its SAVEPOINT
        with translate_errors():
            result = await conn.exec_driver_sql(sql, records)
            rows = [tuple(row) for row in result.all()] if returning else []
        if returning and len(rows) != len(records):
            raise _Mismatch
        return rows

    return await attempt_in_savepoint(session, send, (AsyncDBError, _Mismatch))
