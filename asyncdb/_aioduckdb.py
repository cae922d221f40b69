"""Async access to DuckDB: one worker thread per connection, results handed to the loop.

DuckDB's Python API is synchronous. As aiosqlite does for sqlite3, every
:class:`Connection` owns one worker thread; each call runs there in order and its result
(or exception) comes back to the event loop through a future, so the loop never blocks
on the database and a DuckDB connection is only ever touched by one thread.

The API mirrors DuckDB's own (``execute``, ``executemany``, ``fetchall``, ``commit``,
``rollback``, ``close``) with ``await`` in front, which is what SQLAlchemy's asyncio
connector expects (see :mod:`asyncdb._dialect_duckdb`)::

    conn = await connect("analytics.duckdb")
    cursor = conn.cursor()
    await cursor.execute("SELECT 42")
    assert await cursor.fetchall() == [(42,)]
    await conn.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import duckdb

__all__ = ["Connection", "Cursor", "connect"]

R = TypeVar("R")


class Connection:
    """A DuckDB connection driven from asyncio through its own worker thread."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, worker: Worker) -> None:
        self._conn = conn
        self._worker = worker
        self.closed = False

    @property
    def raw(self) -> duckdb.DuckDBPyConnection:
        """The synchronous DuckDB connection; touch it only through :meth:`run`."""
        return self._conn

    async def run(self, fn: Callable[..., R], *args: Any) -> R:
        """Run ``fn(*args)`` on this connection's worker thread and await its result."""
        if self.closed:
            msg = "Connection closed"
            raise duckdb.ConnectionException(msg)
        return await self._worker.submit(fn, *args)

    def cursor(self) -> Cursor:
        """A cursor on this connection (DuckDB results live on the connection itself)."""
        return Cursor(self)

    async def begin(self) -> None:
        """Open a transaction."""
        await self.run(self._conn.begin)

    async def commit(self) -> None:
        """Commit the open transaction."""
        await self.run(self._conn.commit)

    async def rollback(self) -> None:
        """Roll back the open transaction."""
        await self.run(self._conn.rollback)

    async def close(self) -> None:
        """Close the connection and stop its worker thread; a second call does nothing."""
        if self.closed:
            return
        try:
            await self.run(self._conn.close)
        finally:
            self.closed = True
            self._worker.stop()

    def stop(self) -> None:
        """Close without awaiting (garbage collection, a terminated pool connection)."""
        if self.closed:
            return
        self.closed = True
        self._worker.submit_nowait(self._conn.close)
        self._worker.stop()


class Cursor:
    """Executes on its connection's worker and keeps the description and rowcount."""

    arraysize = 1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def execute(self, operation: str, parameters: Sequence[Any] | None = None) -> Cursor:
        """Run one statement."""
        await self._connection.run(self._execute, operation, parameters)
        return self

    async def executemany(self, operation: str, seq_of_parameters: Sequence[Any]) -> Cursor:
        """Run one statement once per parameter set."""
        await self._connection.run(self._executemany, operation, list(seq_of_parameters))
        return self

    async def fetchall(self) -> list[Any]:
        """Every remaining row."""
        return await self._connection.run(self._connection.raw.fetchall)

    async def fetchone(self) -> Any:
        """The next row, or ``None``."""
        return await self._connection.run(self._connection.raw.fetchone)

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        """Up to ``size`` rows."""
        return await self._connection.run(self._connection.raw.fetchmany, size or self.arraysize)

    async def close(self) -> None:
        """Nothing to release: DuckDB keeps the result on the connection."""

    def _execute(self, operation: str, parameters: Sequence[Any] | None) -> None:
        raw = self._connection.raw
        if parameters is None:
            raw.execute(operation)
        else:
            raw.execute(operation, parameters)
        self._after(raw)

    def _executemany(self, operation: str, seq_of_parameters: list[Any]) -> None:
        raw = self._connection.raw
        raw.executemany(operation, seq_of_parameters)
        self._after(raw)

    def _after(self, raw: duckdb.DuckDBPyConnection) -> None:
        # Read on the worker thread, so the loop never touches the DuckDB connection.
        description = raw.description
        self.description = [tuple(col) for col in description] if description else None
        self.rowcount = raw.rowcount


class Worker:
    """One thread that runs a connection's calls in order."""

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="asyncdb-duckdb"
        )

    async def submit(self, fn: Callable[..., R], *args: Any) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def submit_nowait(self, fn: Callable[[], object]) -> None:
        self._executor.submit(fn)

    def stop(self) -> None:
        self._executor.shutdown(wait=False)


async def connect(database: str, **kwargs: Any) -> Connection:
    """Open ``database`` (a file path or ``":memory:"``) on a new worker thread."""
    worker = Worker()
    try:
        conn = await worker.submit(functools.partial(duckdb.connect, database, **kwargs))
    except BaseException:
        worker.stop()
        raise
    return Connection(conn, worker)
