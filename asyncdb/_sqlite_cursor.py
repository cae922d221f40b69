"""One trip to aiosqlite's thread per SQLite statement.

aiosqlite runs each sqlite3 call on the connection's own thread, and every call is a
trip there and back (a queue put, a thread wake-up, a future resolved on the loop).
SQLAlchemy's aiosqlite cursor makes four per statement: open a cursor, execute, fetch
the rows, close the cursor. :class:`OneTripCursor` makes one: the whole statement runs
on aiosqlite's thread as one function, which hands back the rows, the description, the
row count and the last row id together. An ``executemany`` of a statement with
RETURNING (which sqlite3's own executemany would drop the rows of) runs row by row in
that same trip, the rows in parameter order. Server-side cursors (``stream()``) keep
SQLAlchemy's own class: their rows are fetched in pieces by design.

:func:`use_one_trip_cursors` is called on each new connection (the engine's pool
``connect`` event): the connection then hands out these cursors and is SQLAlchemy's own
in every other respect (transactions, errors, terminate).
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

import aiosqlite
from sqlalchemy.util import await_only

__all__ = ["OneTripCursor", "use_one_trip_cursors"]

_Result = tuple[Any, list[Any], int, "int | None"]
#: A statement that gives rows back (a word of the SQL text; a false match only costs speed).
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Result:
    """Execute on the connection's thread; everything the cursor reports, at once."""
    cursor = conn.cursor()
    try:
        if many and _RETURNING.search(operation):
            # sqlite3's executemany drops the rows RETURNING gives: one execute per row,
            # still in this one trip, the rows in parameter order.
            rows: list[Any] = []
            for row_parameters in parameters:
                cursor.execute(operation, row_parameters)
                rows.extend(cursor.fetchall())
            return cursor.description, rows, len(rows), cursor.lastrowid
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else []
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor:
    """A DB-API cursor over an aiosqlite connection, one thread trip per statement."""

    __slots__ = (
        "_adapt_connection",
        "_rows",
        "arraysize",
        "description",
        "lastrowid",
        "rowcount",
    )

    server_side = False

    def __init__(self, adapt_connection: Any) -> None:
        self._adapt_connection = adapt_connection
        self._rows: deque[Any] = deque()
        self.arraysize = 1
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.description: Any = None

    def execute(self, operation: str, parameters: Any = None) -> None:
        self._one_trip(operation, parameters, many=False)

    def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> None:
        self._one_trip(operation, seq_of_parameters, many=True)

    def _one_trip(self, operation: str, parameters: Any, *, many: bool) -> None:
        connection = self._adapt_connection._connection  # the aiosqlite.Connection
        try:
            result = await_only(
                connection._execute(_run, connection._conn, operation, parameters, many)
            )
        except Exception as error:
            self._adapt_connection._handle_exception(error)  # raises the DB-API error
            raise
        self.description, rows, self.rowcount, self.lastrowid = result
        self._rows = deque(rows)

    def setinputsizes(self, *inputsizes: Any) -> None:
        """DB-API no-op."""

    def close(self) -> None:
        self._rows.clear()

    async def _async_soft_close(self) -> None:
        """Called by SQLAlchemy's asyncio results: the sqlite3 cursor is closed already
        (on its thread, with the statement) and the rows stay readable."""

    def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    def fetchmany(self, size: int | None = None) -> list[Any]:
        count = min(self.arraysize if size is None else size, len(self._rows))
        return [self._rows.popleft() for _ in range(count)]

    def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    def __iter__(self) -> Iterator[Any]:
        while self._rows:
            yield self._rows.popleft()


@functools.cache
def _with_one_trip_cursors(cls: Any) -> type:
    """A subclass of SQLAlchemy's adapted aiosqlite connection handing out
    :class:`OneTripCursor` for every cursor but a server-side one (one per class)."""

    def cursor(self: Any, server_side: bool = False) -> Any:
        return cls.cursor(self, server_side=True) if server_side else OneTripCursor(self)

    return type(cls.__name__, (cls,), {"__slots__": (), "cursor": cursor})


def use_one_trip_cursors(adapted: Any) -> None:
    """Make ``adapted`` (SQLAlchemy's adapted aiosqlite connection, as a pool's
    ``connect`` event receives it) hand out :class:`OneTripCursor`.

    A connection whose driver is not an ``aiosqlite.Connection`` (an ``async_creator``
    returning something else) keeps SQLAlchemy's cursors.
    """
    if isinstance(getattr(adapted, "_connection", None), aiosqlite.Connection):
        adapted.__class__ = _with_one_trip_cursors(adapted.__class__)
