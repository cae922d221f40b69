"""A standalone bulk_create owns its transaction: its first COPY needs no SAVEPOINT.

A refused COPY then rolls that transaction back and the rows go again as INSERT: no row
of the call stays and the error is the INSERT path's (it names the row). Inside a
caller's unit the COPY keeps its SAVEPOINT, so the caller's earlier work survives.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from asyncdb import AsyncDatabaseManager, AsyncDBError, AsyncUnitOfWork, ConflictError, Repository
from asyncdb._capabilities import supports
from asyncdb._copy import COPY_MIN_ROWS
from tests.integration.conftest import names
from tests.integration.models import Account, Item, Order
from tests.integration.test_bulk_copy import _order_rows, sent

BATCH = 2 * COPY_MIN_ROWS


def _rows(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"name": f"r{i:05d}", "sku": f"s{i}"} for i in range(start, start + count)]


@contextmanager
def rollbacks(db: AsyncDatabaseManager) -> Iterator[list[object]]:
    """The transactions rolled back (whole ones, not savepoints)."""
    seen: list[object] = []

    def listener(conn: Any) -> None:
        seen.append(conn)

    event.listen(db.engine.sync_engine, "rollback", listener)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "rollback", listener)


async def _insert_error(items: Repository[Item], rows: list[dict[str, Any]]) -> AsyncDBError:
    """The error of the INSERT path (batches below COPY_MIN_ROWS never COPY)."""
    with pytest.raises(AsyncDBError) as info:
        await items.bulk_create(rows, batch_size=COPY_MIN_ROWS - 1)
    return info.value


def _same(got: AsyncDBError, expected: AsyncDBError) -> None:
    assert type(got) is type(expected)
    assert str(got) == str(expected)
    assert got.sqlstate == expected.sqlstate
    assert getattr(got, "constraint", None) == getattr(expected, "constraint", None)


async def test_a_standalone_copy_sends_no_savepoint(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db, audit=False)
    rows = _rows(5 * BATCH)
    with sent(db) as statements:
        assert await items.bulk_create(rows, batch_size=BATCH) == len(rows)
    with sent(db) as streamed:
        assert await items.bulk_create(iter(_rows(3 * BATCH, len(rows))), batch_size=BATCH) == 300
    if db.backend == "postgresql":
        assert statements == [], statements  # BEGIN, COPY, COMMIT all go past the cursor
        # A generator: the first batch's COPY needs none, each later one its own.
        assert streamed.count("SAVEPOINT") == 2, streamed
    elif supports(db.backend, "savepoint"):
        # INSERT batches keep theirs (to name a failing row); the call's own is gone.
        assert statements.count("SAVEPOINT") == 5, statements
    assert len(await names(db)) == 8 * BATCH


@pytest.mark.requires("savepoint")  # DuckDB names a failed batch's rows, not the row
@pytest.mark.parametrize("bad", [7, COPY_MIN_ROWS + 3, 3 * BATCH + 11])
async def test_a_refused_standalone_copy_writes_nothing_and_names_the_row(
    db: AsyncDatabaseManager, bad: int
) -> None:
    items = Repository(Item, db, audit=False)
    await items.create(name="existing", sku="DUP")
    rows = _rows(4 * BATCH)
    rows[bad]["sku"] = "DUP"
    expected = await _insert_error(items, rows)
    assert isinstance(expected, ConflictError)
    assert f"Row {bad}:" in str(expected)
    for given in (rows, iter(rows)):  # one COPY for the list; one per batch for a generator
        with rollbacks(db) as rolled_back, pytest.raises(AsyncDBError) as info:
            await items.bulk_create(given, batch_size=BATCH)
        _same(info.value, expected)
        assert await names(db) == ["existing"]
        if db.backend == "postgresql" and (given is rows or bad < BATCH):
            # The first COPY ran without a SAVEPOINT: refused, it rolled the call's
            # transaction back (and the call's end rolled back the replay's).
            assert len(rolled_back) >= 2, rolled_back


@pytest.mark.requires("savepoint")
async def test_a_duplicate_within_the_input_after_a_copied_batch(
    db: AsyncDatabaseManager,
) -> None:
    # A generator's first batch is copied without a SAVEPOINT; the later batch that
    # repeats one of its keys is refused in its own, and the INSERT replay (which sees
    # the first batch) names it.
    items = Repository(Item, db, audit=False)
    rows = _rows(3 * BATCH)
    rows[2 * BATCH + 5]["sku"] = rows[9]["sku"]
    expected = await _insert_error(items, rows)
    assert isinstance(expected, ConflictError)
    with pytest.raises(AsyncDBError) as info:
        await items.bulk_create(iter(rows), batch_size=BATCH)
    _same(info.value, expected)
    assert await names(db) == []


@pytest.mark.requires("savepoint")
async def test_a_refused_foreign_key_in_a_standalone_copy(db: AsyncDatabaseManager) -> None:
    account = await Repository(Account, db, audit=False).create(email="a@x")
    orders = Repository(Order, db, audit=False)
    rows = _order_rows(account.id, 0, BATCH)
    rows[BATCH - 1]["account_id"] = account.id + 1000
    with pytest.raises(AsyncDBError) as expected:
        await orders.bulk_create(rows, batch_size=COPY_MIN_ROWS - 1)
    with pytest.raises(AsyncDBError) as info:
        await orders.bulk_create(rows)
    _same(info.value, expected.value)
    assert await orders.count() == 0


@pytest.mark.requires("savepoint")  # DuckDB: a failed statement aborts the transaction
async def test_inside_a_unit_a_refused_copy_keeps_the_earlier_work(
    db: AsyncDatabaseManager,
) -> None:
    rows = _rows(4 * BATCH)
    rows[3 * BATCH + 2]["sku"] = "DUP"
    async with AsyncUnitOfWork(db) as uow:
        items = uow.get_repository(Item, audit=False)
        await items.create(name="earlier", sku="DUP")
        for given in (rows, iter(rows)):
            refused = pytest.raises(ConflictError, match=f"Row {3 * BATCH + 2}:")
            with sent(db) as statements, refused:
                await items.bulk_create(given, batch_size=BATCH)
            assert statements[0] == "SAVEPOINT"  # the call's own, kept inside a unit
            assert await items.count() == 1  # the unit's earlier row, still there
        assert await items.bulk_create(rows[: 3 * BATCH], batch_size=BATCH) == 3 * BATCH
    assert len(await names(db)) == 3 * BATCH + 1
