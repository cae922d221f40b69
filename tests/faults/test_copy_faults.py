"""A connection lost around a standalone bulk_create's COPY (no SAVEPOINT): nothing stays.

The first COPY of a standalone call runs without a SAVEPOINT (its transaction is its
own); a connection cut before the COPY reaches the server, or in the middle of its rows,
must leave no row and raise a DatabaseUnavailableError, not a replayed INSERT's error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asyncdb import AsyncDatabaseManager, DatabaseUnavailableError, Repository
from tests.faults.proxy import FaultProxy
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.models import Item


@pytest.fixture
async def direct(postgres_url: str) -> AsyncIterator[AsyncDatabaseManager]:
    """A manager straight to the server, to read the truth after a fault."""
    db = manager_for(postgres_url)
    await db.connect()
    await reset_schema(db)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
async def proxied(postgres_url: str, proxy: FaultProxy) -> AsyncIterator[AsyncDatabaseManager]:
    db = manager_for(proxy.url_for(postgres_url), connect_retries=1, connect_timeout=2.0)
    await db.connect()
    try:
        yield db
    finally:
        await db.dispose()


@pytest.mark.parametrize("marker", [b"COPY ", b"row 2345"], ids=["before", "mid-rows"])
async def test_a_cut_around_a_standalone_copy_leaves_nothing(
    direct: AsyncDatabaseManager,
    proxied: AsyncDatabaseManager,
    proxy: FaultProxy,
    marker: bytes,
) -> None:
    items = Repository(Item, proxied, audit=False)
    rows = [{"name": f"row {i}", "qty": i} for i in range(5000)]
    assert await items.bulk_create(rows[:100]) == 100  # warm: the COPY's introspection
    fired = proxy.cut_on(marker)
    with pytest.raises(DatabaseUnavailableError):
        await items.bulk_create(rows[100:], batch_size=1000)
    assert fired.is_set()
    assert await Repository(Item, direct).count() == 100
    assert await items.bulk_create(rows[100:200]) == 100  # the pool recovered
