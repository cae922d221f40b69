"""Every wait is bounded by the setting that names it (issue 14, item 6)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import select

from asyncdb import AsyncDatabaseManager, AsyncUnitOfWork, PoolTimeoutError, Repository, run_tx
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.models import Counter

POOL_TIMEOUT = 0.5
ENTRIES = ["session", "unit", "run_tx", "read", "write", "bulk"]


async def _enter(db: AsyncDatabaseManager, entry: str) -> Any:
    if entry == "session":
        async with db.session() as session:
            return await session.execute(select(1))
    if entry == "unit":
        async with AsyncUnitOfWork(db) as uow:
            return await uow.session.execute(select(1))
    if entry == "run_tx":
        return await run_tx(lambda uow: uow.session.execute(select(1)), db=db, backoff=0)
    if entry == "read":
        return await Repository(Counter, db).get_by_id(1)
    if entry == "write":
        return await Repository(Counter, db).create(value=1)
    return await Repository(Counter, db).bulk_create([{"value": 1}])


@pytest.mark.parametrize("entry", ENTRIES)
async def test_exhausted_pool_fails_at_pool_timeout_through_every_entry(
    db_url: str, entry: str
) -> None:
    db = manager_for(db_url, pool_size=1, max_overflow=0, pool_timeout=POOL_TIMEOUT)
    await db.connect()
    try:
        await reset_schema(db)
        async with db.session() as holder:
            await holder.execute(select(1))  # the pool's only connection is now checked out
            started = time.monotonic()
            with pytest.raises(PoolTimeoutError, match="pool_timeout"):
                await _enter(db, entry)
            elapsed = time.monotonic() - started
        assert POOL_TIMEOUT - 0.1 <= elapsed <= POOL_TIMEOUT + 0.1, f"{entry}: {elapsed:.3f} s"
        # Nothing is stuck afterwards: the same entry works once the pool has room.
        await _enter(db, entry)
    finally:
        await db.dispose()
