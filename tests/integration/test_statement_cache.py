"""Compiled statements are cached on every backend: the second execution of a statement
shape skips compilation (DuckDB's dialect had opted out of SQLAlchemy's cache)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine.interfaces import CacheStats

from asyncdb import AsyncDatabaseManager
from tests.integration.models import Item


async def test_the_same_statement_shape_is_compiled_once(db: AsyncDatabaseManager) -> None:
    async with db.engine.connect() as conn:
        outcomes = [
            (await conn.execute(select(Item.id).where(Item.qty > qty))).context.cache_hit
            for qty in (1, 2, 3)
        ]
    assert outcomes[0] in (CacheStats.CACHE_MISS, CacheStats.CACHE_HIT)
    assert outcomes[1:] == [CacheStats.CACHE_HIT, CacheStats.CACHE_HIT]
