"""Errors a daily user meets: conflicts name their columns alike on every backend, and a
missing toolkit table says how to create it."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from asyncdb import AsyncDatabaseManager, ConflictError, QueryError, Repository
from tests.integration.models import Item, Kind


async def test_conflict_columns_are_bare_names_on_every_backend(db: AsyncDatabaseManager) -> None:
    kinds = Repository(Kind, db)
    await kinds.create(namespace="n", code="c")
    with pytest.raises(ConflictError) as info:
        await kinds.create(namespace="n", code="c")
    assert info.value.columns == ("namespace", "code")
    items = Repository(Item, db)
    await items.create(name="a", sku="SKU-1")
    with pytest.raises(ConflictError) as single:
        await items.create(name="b", sku="SKU-1")
    assert single.value.columns == ("sku",)
    assert "SKU-1" not in str(single.value)


async def test_a_missing_audit_log_names_the_table_and_the_command(
    db: AsyncDatabaseManager,
) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text("DROP TABLE asyncdb_audit_log"))
    with pytest.raises(QueryError) as info:
        await Repository(Item, db).create(name="audited")
    message = str(info.value)
    assert "asyncdb_audit_log" in message
    assert "asyncdb migrate" in message
    assert "init_database(db)" in message
    assert "Check the SQL" not in message
