"""bulk_create through COPY (PostgreSQL): the rows the INSERT path writes, all or nothing."""

from __future__ import annotations

import datetime as dt
import decimal
import gc
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import delete, event, select

from asyncdb import AsyncDatabaseManager, AsyncUnitOfWork, ConflictError, Repository
from asyncdb._capabilities import supports
from asyncdb._copy import COPY_MIN_ROWS
from tests.integration.conftest import empty_tables, manager_for
from tests.integration.models import Account, Color, Item, Order


@contextmanager
def sent(db: AsyncDatabaseManager) -> Iterator[list[str]]:
    statements: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(db.engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", listener)


def _order_rows(account_id: int, start: int, count: int) -> list[dict[str, Any]]:
    return [
        {
            "account_id": account_id,
            "token": uuid.UUID(int=i),
            "amount": decimal.Decimal(f"{i}.0123456789"),
            "color": Color.RED if i % 2 else Color.BLUE,
            "blob": bytes([i % 256]) * 3,
            "due": dt.date(2026, 1, 1) + dt.timedelta(days=i),
        }
        for i in range(start, start + count)
    ]


def _comparable(order: Order) -> tuple[Any, ...]:
    return (order.token, order.amount, order.color, order.blob, order.due)


async def test_copy_and_insert_write_the_same_rows(db: AsyncDatabaseManager) -> None:
    account = await Repository(Account, db, audit=False).create(email="a@x")
    orders = Repository(Order, db, audit=False)
    rows = _order_rows(account.id, 0, 3 * COPY_MIN_ROWS)
    with sent(db) as statements:
        # Batches below COPY_MIN_ROWS go as INSERT everywhere; larger ones as COPY on
        # PostgreSQL.
        assert await orders.bulk_create(rows, batch_size=COPY_MIN_ROWS - 1) == len(rows)
    assert "INSERT" in statements
    inserted = sorted(map(_comparable, await orders.find_by(limit=1000)), key=lambda t: t[0])
    async with db.engine.begin() as conn:
        await conn.execute(delete(Order))
    with sent(db) as statements:
        assert await orders.bulk_create(rows, batch_size=len(rows)) == len(rows)
    if db.backend == "postgresql":
        assert "INSERT" not in statements  # the COPY went past SQLAlchemy's cursor
    copied = sorted(map(_comparable, await orders.find_by(limit=1000)), key=lambda t: t[0])
    assert copied == inserted
    assert copied[1] == (
        uuid.UUID(int=1),
        decimal.Decimal("1.0123456789"),
        Color.RED,
        b"\x01\x01\x01",
        dt.date(2026, 1, 2),
    )


async def test_copy_fills_timestamps_and_defaults(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db, audit=False)
    before = dt.datetime.now(dt.timezone.utc)
    assert await items.bulk_create({"name": f"n{i}"} for i in range(2 * COPY_MIN_ROWS)) == 100
    stored = await items.find_by(limit=1000)
    assert len(stored) == 100
    for item in stored:
        assert item.qty == 0 and item.sku is None and item.deleted_at is None
        assert item.created_at >= before - dt.timedelta(seconds=1)
        assert item.created_at.tzinfo is not None and item.updated_at is not None


async def test_a_rejected_copy_batch_names_the_row_and_writes_nothing(
    db: AsyncDatabaseManager,
) -> None:
    items = Repository(Item, db, audit=False)
    await items.create(name="existing", sku="DUP")
    rows: list[dict[str, Any]] = [{"name": f"r{i}", "sku": None} for i in range(300)]
    rows[234]["sku"] = "DUP"
    # Without savepoints (DuckDB) the failed batch cannot be replayed row by row to find
    # the row: the error names the batch's rows instead.
    exact = supports(db.backend, "savepoint")
    with pytest.raises(ConflictError, match="Row 234" if exact else "Rows 200-299") as info:
        await items.bulk_create(rows, batch_size=100)
    assert "DUP" not in str(info.value)
    assert await items.count() == 1
    account = await Repository(Account, db, audit=False).create(email="a@x")
    orders = Repository(Order, db, audit=False)
    dangling = _order_rows(account.id, 0, 100)
    dangling[77]["account_id"] = account.id + 1000
    with pytest.raises(ConflictError, match=r"Row 77.*foreign-key" if exact else "Rows 0-99"):
        await orders.bulk_create(dangling)
    assert await orders.count() == 0


async def test_copied_rows_soft_delete_like_inserted_ones(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db, audit=False)
    assert await items.bulk_create({"name": f"n{i}"} for i in range(COPY_MIN_ROWS)) == 50
    first = (await items.find_by(limit=1))[0]
    await items.delete(first.id)
    assert await items.count() == COPY_MIN_ROWS - 1
    async with db.session(read_only=True) as session:
        total = len((await session.scalars(select(Item))).all())
    assert total == COPY_MIN_ROWS


@pytest.mark.slow  # a million rows through COPY: several seconds
async def test_a_generator_streams_in_constant_memory(postgres_url: str) -> None:
    db = manager_for(postgres_url)
    await db.connect()
    try:
        await empty_tables(db)
        items = Repository(Item, db, audit=False)

        def rows(count: int) -> Iterator[dict[str, Any]]:
            return ({"name": f"row {i:08d}", "qty": i} for i in range(count))

        async def peak(count: int) -> int:
            gc.collect()
            tracemalloc.start()
            try:
                assert await items.bulk_create(rows(count), batch_size=1000) == count
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()

        await peak(2_000)  # warm: statement caches, codecs
        small, large = await peak(5_000), await peak(50_000)
        # Ten times the rows, the same batches in memory: the peak does not grow with them.
        assert large < small * 1.5 + 512 * 1024, (small, large)
    finally:
        await db.dispose()


async def test_copy_inside_a_unit_sees_pending_rows_and_rolls_back(
    db: AsyncDatabaseManager,
) -> None:
    async with AsyncUnitOfWork(db) as uow:
        account = Account(email="first@x")
        uow.session.add(account)
        await uow.flush()
        orders = uow.get_repository(Order, audit=False)
        parent = Account(email="second@x")
        uow.session.add(parent)  # pending when the COPY starts
        assert await orders.bulk_create(_order_rows(account.id, 0, COPY_MIN_ROWS)) == 50
        assert parent.id is not None  # flushed before the COPY, as an INSERT would
        await uow.rollback()
    assert await Repository(Order, db).count() == 0
    assert await Repository(Account, db).count() == 0
