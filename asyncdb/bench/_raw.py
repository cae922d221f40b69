"""The raw driver stacks: asyncpg's own pool, and a small pool of aiosqlite connections.

They send the same SQL the other stacks send, with nothing in between: the ceiling
the libraries are measured against. A single statement runs without an explicit
transaction (it is atomic on its own); bulk inserts run in one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy.engine import make_url

from ._base import _BUSY_TIMEOUT_MS, POOL_SIZE, TOP_ID, Stack, Target

__all__ = ["RawAiosqliteStack", "RawAsyncpgStack", "raw_stack"]

_COLUMNS = "id, name, qty, note"


def raw_stack(target: Target) -> Stack:
    """The raw stack of ``target``'s backend."""
    if target.backend == "postgresql":
        return RawAsyncpgStack(target)
    return RawAiosqliteStack(target)


class _Sql:
    """The statements, with the placeholder style of the driver."""

    def __init__(self, read: str, write: str, mark: str) -> None:
        p = [mark.format(n=n) for n in range(1, 4)]
        self.insert = f"INSERT INTO {write} (name, qty, note) VALUES ({p[0]}, {p[1]}, {p[2]})"
        self.by_id = f"SELECT {_COLUMNS} FROM {read} WHERE id = {p[0]}"
        self.update = (
            f"UPDATE {read} SET qty = {p[1]}, note = {p[2]} WHERE id = {p[0]} RETURNING {_COLUMNS}"
        )
        self.upsert = (
            f"INSERT INTO {write} (id, name, qty, note) VALUES "
            f"({', '.join(mark.format(n=n) for n in range(1, 5))}) ON CONFLICT (id) DO UPDATE "
            "SET name = excluded.name, qty = excluded.qty, note = excluded.note"
        )
        self.count = f"SELECT count(*) FROM {read}"
        self.page = f"SELECT {_COLUMNS} FROM {read} ORDER BY id LIMIT {p[0]} OFFSET {p[1]}"
        self.after = f"SELECT {_COLUMNS} FROM {read} WHERE id > {p[0]} ORDER BY id LIMIT {p[1]}"
        self.before = (
            f"SELECT {_COLUMNS} FROM {read} WHERE id < {p[0]} ORDER BY id DESC LIMIT {p[1]}"
        )

    def keyset(self, after: Any, descending: bool) -> tuple[str, Any]:
        """The statement and the cursor's id for a page in either direction."""
        if descending:
            return self.before, TOP_ID if after is None else after
        return self.after, after or 0


def _keyset(rows: Sequence[Any], limit: int) -> tuple[int, Any]:
    page = rows[:limit]
    return len(page), page[-1][0] if len(rows) > limit else None


class RawAsyncpgStack(Stack):
    """asyncpg with its own pool (``min_size=1``, ``max_size=POOL_SIZE``)."""

    pool: Any

    async def open(self) -> None:
        import asyncpg

        url = make_url(self.target.url).set(drivername="postgresql")
        self.sql = _Sql(self.read_table.name, self.write_table.name, "${n}")
        self.pool = await asyncpg.create_pool(
            url.render_as_string(hide_password=False), min_size=1, max_size=POOL_SIZE
        )

    async def close(self) -> None:
        if hasattr(self, "pool"):
            await self.pool.close()

    async def create(self, values: dict[str, Any]) -> Any:
        return await self.pool.fetchval(
            self.sql.insert + " RETURNING id", values["name"], values["qty"], values["note"]
        )

    async def get_by_id(self, ident: int) -> Any:
        return await self.pool.fetchrow(self.sql.by_id, ident)

    async def update(self, ident: int, values: dict[str, Any]) -> Any:
        return await self.pool.fetchrow(self.sql.update, ident, values["qty"], values["note"])

    async def paginate(self, page: int, page_size: int) -> Any:
        async with self.pool.acquire() as conn:
            total = await conn.fetchval(self.sql.count)
            return total, await conn.fetch(self.sql.page, page_size, (page - 1) * page_size)

    async def bulk_create(self, rows: list[dict[str, Any]]) -> Any:
        # COPY: the fastest way into PostgreSQL, the ceiling for asyncdb's COPY path.
        records = [(r["name"], r["qty"], r["note"]) for r in rows]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table(
                self.write_table.name, records=records, columns=["name", "qty", "note"]
            )

    async def bulk_upsert(self, rows: list[dict[str, Any]]) -> Any:
        records = [(r["id"], r["name"], r["qty"], r["note"]) for r in rows]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(self.sql.upsert, records)

    async def keyset_page(
        self, after: Any, limit: int, descending: bool = False
    ) -> tuple[int, Any]:
        sql, ident = self.sql.keyset(after, descending)
        return _keyset(await self.pool.fetch(sql, ident, limit + 1), limit)


class RawAiosqliteStack(Stack):
    """aiosqlite in autocommit mode, ``POOL_SIZE`` connections handed out by a queue."""

    async def open(self) -> None:
        import aiosqlite

        self.sql = _Sql(self.read_table.name, self.write_table.name, "?")
        self._idle: asyncio.Queue[Any] = asyncio.Queue()
        self._all: list[Any] = []
        database = make_url(self.target.url).database or ""
        for _ in range(POOL_SIZE):
            conn = await aiosqlite.connect(database, isolation_level=None)
            self._all.append(conn)
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        for conn in getattr(self, "_all", []):
            await conn.close()

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        conn = await self._idle.get()
        try:
            yield conn
        finally:
            self._idle.put_nowait(conn)

    async def _fetchall(self, sql: str, *params: Any) -> list[Any]:
        async with self._conn() as conn, conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def create(self, values: dict[str, Any]) -> Any:
        params = (values["name"], values["qty"], values["note"])
        async with self._conn() as conn, conn.execute(self.sql.insert, params) as cursor:
            return cursor.lastrowid

    async def get_by_id(self, ident: int) -> Any:
        async with self._conn() as conn, conn.execute(self.sql.by_id, (ident,)) as cursor:
            return await cursor.fetchone()

    async def update(self, ident: int, values: dict[str, Any]) -> Any:
        rows = await self._fetchall(self.sql.update, ident, values["qty"], values["note"])
        return rows[0] if rows else None

    async def paginate(self, page: int, page_size: int) -> Any:
        async with self._conn() as conn:
            async with conn.execute(self.sql.count) as cursor:
                total = (await cursor.fetchone())[0]
            params = (page_size, (page - 1) * page_size)
            async with conn.execute(self.sql.page, params) as cursor:
                return total, await cursor.fetchall()

    async def bulk_create(self, rows: list[dict[str, Any]]) -> Any:
        records = [(r["name"], r["qty"], r["note"]) for r in rows]
        await self._executemany(self.sql.insert, records)

    async def bulk_upsert(self, rows: list[dict[str, Any]]) -> Any:
        records = [(r["id"], r["name"], r["qty"], r["note"]) for r in rows]
        await self._executemany(self.sql.upsert, records)

    async def _executemany(self, sql: str, records: list[tuple[Any, ...]]) -> None:
        async with self._conn() as conn:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                await conn.executemany(sql, records)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    async def keyset_page(
        self, after: Any, limit: int, descending: bool = False
    ) -> tuple[int, Any]:
        sql, ident = self.sql.keyset(after, descending)
        return _keyset(await self._fetchall(sql, ident, limit + 1), limit)
