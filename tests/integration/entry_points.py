"""Every way a caller reaches the database, for tests that must hold on each of them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from asyncdb import AsyncDatabaseManager, AsyncUnitOfWork, Repository, run_tx
from tests.integration.models import Counter

ENTRIES = ["session", "unit", "run_tx", "read", "write", "bulk"]


async def enter(db: AsyncDatabaseManager, entry: str) -> Any:
    """One small operation through ``entry`` (one of :data:`ENTRIES`)."""
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
