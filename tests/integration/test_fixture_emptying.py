"""The matrix's per-test emptying (``connect_fresh``): a test's rows, sequence values and
DDL never reach the next test, on every backend, however cheaply each backend empties."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from asyncdb import Repository
from tests.integration.conftest import connect_fresh
from tests.integration.models import Item


async def test_rows_ids_and_ddl_of_one_test_do_not_reach_the_next(
    db_url: str, schema_templates: Path
) -> None:
    first = await connect_fresh(db_url, schema_templates)
    try:
        items = Repository(Item, first, audit=False)
        created = [await items.create(Item(name=name, qty=1)) for name in ("a", "b", "c")]
        assert [item.id for item in created] == [1, 2, 3]
        async with first.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE t_item ADD COLUMN leftover INTEGER"))
    finally:
        await first.dispose()

    second = await connect_fresh(db_url, schema_templates)
    try:
        items = Repository(Item, second, audit=False)
        assert await items.count() == 0
        assert (await items.create(Item(name="d", qty=1))).id == 1
        async with second.engine.connect() as conn:
            columns = (await conn.execute(text("SELECT * FROM t_item"))).keys()
        assert "leftover" not in columns
    finally:
        await second.dispose()
