"""SQLite: each statement is one trip to aiosqlite's thread (SQLAlchemy's own cursor
makes four), and the cursor still behaves as a DB-API cursor in every respect."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Connection, select, text

from asyncdb import AsyncDatabaseManager, ConflictError, Repository
from asyncdb._sqlite_cursor import OneTripCursor
from tests.integration.models import Item

pytestmark = pytest.mark.parametrize("backend", ["sqlite-file", "sqlite-memory"], indirect=True)


@contextmanager
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of each function aiosqlite runs on a connection's thread."""
    seen: list[str] = []
    execute = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await execute(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    yield seen


async def _seed(db: AsyncDatabaseManager, count: int) -> list[Item]:
    items = Repository(Item, db, audit=False)
    await items.bulk_create([Item(name=f"n{i}", qty=i) for i in range(count)])
    return sorted(await items.get_all(), key=lambda item: item.qty)


async def test_a_query_is_one_trip(
    db: AsyncDatabaseManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _seed(db, 3)
    async with db.session(read_only=True) as session:
        await session.execute(text("SELECT 1"))  # BEGIN sent
        with trips(monkeypatch) as seen:
            rows = (await session.scalars(select(Item.name).order_by(Item.qty))).all()
            during = list(seen)
    assert rows == ["n0", "n1", "n2"]
    assert during == ["_run"]


async def test_get_by_id_is_one_trip(
    db: AsyncDatabaseManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An autocommit read: no BEGIN, no ROLLBACK, and the SELECT in one trip (four with
    SQLAlchemy's cursor: open, execute, fetch, close)."""
    (created,) = await _seed(db, 1)
    items = Repository(Item, db, audit=False)
    with trips(monkeypatch) as seen:
        assert (await items.get_by_id(created.id)).name == "n0"
    assert seen == ["_run"]


async def test_fetch_methods_rowcount_and_lastrowid(db: AsyncDatabaseManager) -> None:
    await _seed(db, 5)

    def use_cursor(conn: Connection) -> dict[str, Any]:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        assert isinstance(cursor, OneTripCursor)
        seen: dict[str, Any] = {}
        cursor.execute("SELECT qty FROM t_item ORDER BY qty")
        seen["description"] = [column[0] for column in cursor.description]
        cursor.arraysize = 2
        seen["one"] = cursor.fetchone()
        seen["many_default"] = cursor.fetchmany()
        seen["many_10"] = cursor.fetchmany(10)
        seen["after_end"] = (cursor.fetchone(), cursor.fetchmany(3), cursor.fetchall())
        cursor.execute("SELECT qty FROM t_item WHERE qty < ? ORDER BY qty", (3,))
        seen["iterated"] = list(cursor)
        cursor.execute("UPDATE t_item SET qty = qty + 10 WHERE qty >= ?", (3,))
        seen["updated"] = (cursor.rowcount, cursor.description, cursor.fetchall())
        cursor.executemany("UPDATE t_item SET qty = qty + 1 WHERE qty = ?", [(2,), (13,), (99,)])
        seen["many_updated"] = cursor.rowcount
        cursor.execute(
            "INSERT INTO t_item (name, qty, created_at, updated_at) "
            "VALUES ('new', 7, '2026-01-01', '2026-01-01')"
        )
        seen["lastrowid"] = cursor.lastrowid
        cursor.execute("SELECT max(id) FROM t_item")
        seen["max_id"] = cursor.fetchall()[0][0]
        cursor.close()
        return seen

    async with db.engine.begin() as conn:
        seen = await conn.run_sync(use_cursor)
    assert seen["description"] == ["qty"]
    assert seen["one"] == (0,)
    assert seen["many_default"] == [(1,), (2,)]
    assert seen["many_10"] == [(3,), (4,)]
    assert seen["after_end"] == (None, [], [])
    assert seen["iterated"] == [(0,), (1,), (2,)]
    assert seen["updated"] == (2, None, [])
    assert seen["many_updated"] == 2
    assert seen["lastrowid"] == seen["max_id"]


async def test_driver_errors_are_translated_and_data_kept(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db, audit=False)
    (first,) = await _seed(db, 1)
    with pytest.raises(ConflictError):
        await items.create(Item(id=first.id, name="dup", qty=1))

    def bad_sql(conn: Connection) -> None:
        conn.connection.dbapi_connection.cursor().execute("SELECT * FROM no_such_table")  # type: ignore[union-attr]

    async with db.engine.connect() as conn:
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            await conn.run_sync(bad_sql)
    assert [item.name for item in await items.get_all()] == ["n0"]


async def test_a_closed_driver_connection_raises_a_dbapi_error(db: AsyncDatabaseManager) -> None:
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        cursor = raw.dbapi_connection.cursor()  # type: ignore[union-attr]
        await driver.close()  # type: ignore[union-attr]

        def run() -> None:
            cursor.execute("SELECT 1")

        with pytest.raises(
            sqlite3.OperationalError, match=r"(?i)no active connection|connection closed"
        ):
            await conn.run_sync(lambda _: run())
        await conn.invalidate()
    assert await db.health_check()


async def test_streaming_keeps_the_server_side_cursor(db: AsyncDatabaseManager) -> None:
    await _seed(db, 30)
    async with db.session(read_only=True) as session:
        result = await session.stream(select(Item.qty).order_by(Item.qty))
        seen = [qty async for qty in result.scalars()]
    assert seen == list(range(30))

    def cursor_types(conn: Connection) -> tuple[type, type]:
        adapted: Any = conn.connection.dbapi_connection
        return type(adapted.cursor()), type(adapted.cursor(server_side=True))

    async with db.engine.connect() as conn:
        plain, server_side = await conn.run_sync(cursor_types)
    assert plain is OneTripCursor
    assert not issubclass(server_side, OneTripCursor)


async def test_executemany_with_returning_gives_each_rows_values_in_order(
    db: AsyncDatabaseManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite3's own executemany drops RETURNING's rows; this cursor runs the rows one by
    one on the driver's thread, in the same single trip."""
    sql = (
        "INSERT INTO t_item (name, qty, created_at, updated_at) "
        "VALUES (?, ?, '2026-01-01', '2026-01-01') RETURNING id, name"
    )
    async with db.engine.begin() as conn:
        with trips(monkeypatch) as seen:
            result = await conn.exec_driver_sql(sql, [("a", 1), ("b", 2), ("c", 3)])
            rows = [tuple(row) for row in result.all()]
            during = list(seen)
    assert during == ["_run"]
    assert [name for _, name in rows] == ["a", "b", "c"]
    assert [row_id for row_id, _ in rows] == sorted(row_id for row_id, _ in rows)
    assert result.rowcount == 3
