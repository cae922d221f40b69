"""bulk_create of a list on PostgreSQL: its batches stream through one COPY, and where the
batch-by-batch path would leave COPY (a batch to convert, refuse or below COPY_MIN_ROWS)
the stream ends and that path goes on, with the same rows and the same errors."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from asyncdb import AsyncDatabaseManager, ConflictError, Repository, ValidationError
from asyncdb._capabilities import supports
from asyncdb._copy import COPY_MIN_ROWS
from tests.integration.models import Item
from tests.integration.test_bulk_copy import sent


def _rows(count: int) -> list[dict[str, Any]]:
    return [{"name": f"r{i:05d}", "qty": i} for i in range(count)]


async def _stored(db: AsyncDatabaseManager) -> list[tuple[str, int, str | None]]:
    async with db.session(read_only=True) as session:
        found = await session.execute(select(Item.name, Item.qty, Item.sku).order_by(Item.name))
    return [tuple(row) for row in found]  # type: ignore[misc]


async def test_a_list_goes_in_one_copy(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db, audit=False)
    rows = _rows(10 * COPY_MIN_ROWS + 7)  # ten full batches and a short tail
    with sent(db) as statements:
        assert await items.bulk_create(rows, batch_size=COPY_MIN_ROWS) == len(rows)
    assert await _stored(db) == [(r["name"], r["qty"], None) for r in rows]
    if db.backend == "postgresql":
        # One SAVEPOINT, the tail's INSERT batch's: the COPY, first in a transaction of
        # the call's own, needs none (batch by batch with one per batch and the call's
        # own, it was 12).
        assert statements.count("SAVEPOINT") == 1, statements
        assert statements.count("INSERT") == 1  # the tail, below COPY_MIN_ROWS


async def test_a_batch_to_convert_leaves_the_stream_and_is_converted(
    db: AsyncDatabaseManager,
) -> None:
    items = Repository(Item, db, audit=False)
    rows = _rows(4 * COPY_MIN_ROWS)
    rows[2 * COPY_MIN_ROWS + 3]["qty"] = "17"  # a string for an integer: converted
    rows[3 * COPY_MIN_ROWS + 1] = {**rows[3 * COPY_MIN_ROWS + 1], "sku": "only-here"}
    assert await items.bulk_create(rows, batch_size=COPY_MIN_ROWS) == len(rows)
    expected = [(r["name"], int(r["qty"]), r.get("sku")) for r in rows]
    assert await _stored(db) == expected


async def test_a_bad_value_in_a_later_batch_names_its_row_and_writes_nothing(
    db: AsyncDatabaseManager,
) -> None:
    items = Repository(Item, db, audit=False)
    rows = _rows(5 * COPY_MIN_ROWS)
    rows[3 * COPY_MIN_ROWS + 4]["qty"] = True
    with pytest.raises(ValidationError, match=f"Row {3 * COPY_MIN_ROWS + 4}: qty"):
        await items.bulk_create(rows, batch_size=COPY_MIN_ROWS)
    rows[3 * COPY_MIN_ROWS + 4]["qty"] = 1
    rows[4 * COPY_MIN_ROWS + 2]["unknown"] = 1
    with pytest.raises(ValidationError, match=f"Row {4 * COPY_MIN_ROWS + 2}: unknown field"):
        await items.bulk_create(rows, batch_size=COPY_MIN_ROWS)
    assert await items.count() == 0


async def test_a_conflict_in_a_later_batch_names_its_row_and_writes_nothing(
    db: AsyncDatabaseManager,
) -> None:
    items = Repository(Item, db, audit=False)
    rows = [{**row, "sku": f"s{i}"} for i, row in enumerate(_rows(6 * COPY_MIN_ROWS))]
    rows[5 * COPY_MIN_ROWS + 9]["sku"] = rows[COPY_MIN_ROWS]["sku"]  # within the input
    exact = supports(db.backend, "savepoint")
    with pytest.raises(ConflictError, match=f"Row {5 * COPY_MIN_ROWS + 9}" if exact else "Rows"):
        await items.bulk_create(rows, batch_size=COPY_MIN_ROWS)
    assert await items.count() == 0
    assert await items.bulk_create(rows[: 5 * COPY_MIN_ROWS], batch_size=COPY_MIN_ROWS) == 250
