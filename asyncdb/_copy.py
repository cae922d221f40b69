"""bulk_create through PostgreSQL's COPY, on the session's own connection and transaction.

A batch whose rows need nothing back (no audit row needs their ids) goes to the server
with asyncpg's ``copy_records_to_table``: the binary COPY protocol, no SQL text per row
and no per-row parameter processing in SQLAlchemy. The values are the ones the INSERT
path would send: validated, Python-side defaults (timestamps) filled in, and each passed
through its column type's bind processor (a ``TypeDecorator`` such as ``UTCDateTime``,
an ``Enum``, JSON). COPY runs inside a SAVEPOINT of the session's transaction, so a
rejected batch leaves nothing behind and the caller replays it through the INSERT path,
which names the failing row and raises the translated error.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from ._errors import DatabaseUnavailableError, TransactionError
from ._model_info import ModelInfo

__all__ = [
    "COPY_MIN_ROWS",
    "bind_processors",
    "can_copy",
    "copy_batch",
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
    info: ModelInfo, session: AsyncSession, table: Table, params: list[dict[str, Any]]
) -> bool:
    """COPY ``params`` (column keys → values, all rows with the same keys) into ``table``.

    False when the batch must go as INSERT instead: too small, a default only SQLAlchemy
    can fill, or the server refused the COPY (its SAVEPOINT is rolled back first).
    """
    names = list(params[0])
    if len(params) < COPY_MIN_ROWS or not copyable(info, names):
        return False
    records = list(records_of(params, names, bind_processors(session, table, names)))
    return await copy_records(session, table, names, records)


def copyable(info: ModelInfo, names: Sequence[str]) -> bool:
    """False when a column left out has a default only SQLAlchemy's INSERT can fill."""
    return not _needs_sqlalchemy(info, [info.column_to_attr[n] for n in names])


async def copy_records(
    session: AsyncSession, table: Table, names: list[str], records: Iterable[tuple[Any, ...]]
) -> bool:
    """One COPY of ``records`` (an iterable, read while the COPY streams) into ``table``,
    in a SAVEPOINT of the session's transaction. False when the server refused it: the
    SAVEPOINT is rolled back, nothing of it stays. ``records`` must not raise.
    """
    await session.flush()  # as an INSERT's autoflush would: pending parents go first
    try:
        async with session.begin_nested():
            # A nested session transaction sends its SAVEPOINT when a connection is
            # first asked for: ask before the COPY, so a failure rolls back to it.
            conn = await session.connection()
            driver: Any = (await conn.get_raw_connection()).driver_connection
            if not driver.is_in_transaction():
                return False  # never COPY outside the session's transaction
            await driver.copy_records_to_table(
                table.name, records=records, columns=names, schema_name=table.schema
            )
    except (DatabaseUnavailableError, TransactionError):
        raise
    except Exception:  # the INSERT replay raises the precise, translated error
        return False
    return True
