"""bulk_create on SQLite: batches go to the driver as tuples, and the database holds
exactly what SQLAlchemy's executemany would have written."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import delete, event

from asyncdb import AsyncDatabaseManager, Repository, audit_context, get_audit_logs
from tests.integration.models import Account, Item, Order
from tests.integration.test_bulk_copy import _order_rows

pytestmark = pytest.mark.parametrize("backend", ["sqlite-file", "sqlite-memory"], indirect=True)


@contextmanager
def executed(db: AsyncDatabaseManager) -> Iterator[list[tuple[str, bool, bool]]]:
    """Each statement sent: its first word, whether executemany, whether SQLAlchemy
    compiled it (False: SQL handed to the driver as it is)."""
    seen: list[tuple[str, bool, bool]] = []

    def listener(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        seen.append((statement.split()[0].upper(), many, context.compiled is not None))

    event.listen(db.engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", listener)


async def _stored(db: AsyncDatabaseManager, sql: str) -> list[tuple[Any, ...]]:
    """Rows as SQLite holds them (no SQLAlchemy type processing on the way back)."""
    async with db.engine.connect() as conn:
        return [tuple(row) for row in await conn.exec_driver_sql(sql)]


async def test_a_batch_is_one_executemany_of_tuples(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db, audit=False)
    with executed(db) as seen:
        assert await items.bulk_create([{"name": f"n{i}"} for i in range(3)]) == 3
    # The batch in a SAVEPOINT of its own, as on every path; the INSERT not compiled by
    # SQLAlchemy for this call, and sent once for all rows.
    assert [entry[0] for entry in seen] == ["BEGIN", "SAVEPOINT", "INSERT", "RELEASE"]
    assert seen[2] == ("INSERT", True, False)
    assert sorted(item.name for item in await items.get_all()) == ["n0", "n1", "n2"]


async def test_values_are_stored_as_sqlalchemy_stores_them(
    db: AsyncDatabaseManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await Repository(Account, db, audit=False).create(email="a@x")
    orders = Repository(Order, db, audit=False)
    items = Repository(Item, db, audit=False)
    stamp = dt.datetime(2026, 11, 30, 15, 20, 1, 123456, tzinfo=dt.timezone.utc)
    item_rows = [
        {
            "name": f"n{i}",
            "sku": None if i % 2 else f"s{i}",
            "created_at": stamp,
            "updated_at": stamp,
        }
        for i in range(4)
    ]
    order_sql = "SELECT account_id, token, amount, color, blob, due FROM t_order ORDER BY id"
    item_sql = "SELECT name, sku, qty, created_at, updated_at, deleted_at FROM t_item ORDER BY id"

    async def write() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        await orders.bulk_create(_order_rows(account.id, 0, 6))
        await items.bulk_create(item_rows)
        stored = await _stored(db, order_sql), await _stored(db, item_sql)
        async with db.engine.begin() as conn:
            await conn.execute(delete(Order))
            await conn.execute(delete(Item))
        return stored

    with executed(db) as seen:
        as_tuples = await write()
    assert ("INSERT", True, False) in seen
    monkeypatch.setattr("asyncdb._bulk.can_send_tuples", lambda *args: False)
    with executed(db) as seen:
        through_sqlalchemy = await write()
    assert ("INSERT", True, False) not in seen
    assert as_tuples == through_sqlalchemy
    assert len(as_tuples[0]) == 6 and len(as_tuples[1]) == 4


async def test_an_audited_batch_is_one_trip_and_each_row_gets_its_own_key(
    db: AsyncDatabaseManager,
) -> None:
    """SQLAlchemy sends an audited batch (INSERT ... RETURNING in parameter order) one
    statement per row on SQLite; asyncdb sends it in one trip, keys in the rows' order."""
    items = Repository(Item, db)
    await items.create(name="first")  # ids of the batch do not start at 1
    with audit_context(user_id="u"), executed(db) as seen:
        assert await items.bulk_create([{"name": f"n{i}", "qty": i} for i in range(7)]) == 7
    inserts = [entry for entry in seen if entry[0] == "INSERT"]
    assert inserts[0] == ("INSERT", True, False)  # the rows: one executemany
    assert len(inserts) == 2  # and the audit rows' INSERT
    by_id = {item.id: item for item in await items.get_all()}
    created = [
        log
        for log in await get_audit_logs(db, table_name="t_item", limit=100)
        if log.action == "BULK_CREATE"
    ]
    assert len(created) == 7
    for log in created:
        assert log.new_values is not None
        item = by_id[int(log.entity_id)]
        assert (item.name, item.qty) == (log.new_values["name"], log.new_values["qty"])
        assert log.new_values["id"] == item.id
