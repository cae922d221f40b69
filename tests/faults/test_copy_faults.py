"""A connection lost around a standalone bulk_create's COPY (no SAVEPOINT): nothing stays.

The first COPY of a standalone call runs without a SAVEPOINT (its transaction is its
own); a connection cut before the COPY reaches the server, or in the middle of its rows,
must leave no row and raise a DatabaseUnavailableError, not a replayed INSERT's error.
"""

from __future__ import annotations

import pytest

from asyncdb import AsyncDatabaseManager, DatabaseUnavailableError, Repository
from tests.faults.proxy import FaultProxy
from tests.integration.models import Item


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
