"""Every wait is bounded by the setting that names it (issue 14, item 6)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from asyncdb import PoolTimeoutError
from tests.integration.conftest import connect_fresh
from tests.integration.entry_points import ENTRIES, enter

POOL_TIMEOUT = 0.2


@pytest.mark.parametrize("entry", ENTRIES)
async def test_exhausted_pool_fails_at_pool_timeout_through_every_entry(
    db_url: str, schema_templates: Path, entry: str
) -> None:
    db = await connect_fresh(
        db_url, schema_templates, pool_size=1, max_overflow=0, pool_timeout=POOL_TIMEOUT
    )
    try:
        async with db.session() as holder:
            await holder.execute(select(1))  # the pool's only connection is now checked out
            started = time.monotonic()
            with pytest.raises(PoolTimeoutError, match="pool_timeout"):
                await enter(db, entry)
            elapsed = time.monotonic() - started
        # Waited for the pool, and gave up at its timeout: the upper bound only has to
        # tell "bounded" from "hung", with room for a loaded machine (0.7 s was seen).
        assert POOL_TIMEOUT - 0.05 <= elapsed <= POOL_TIMEOUT + 1.5, f"{entry}: {elapsed:.3f} s"
        # Nothing is stuck afterwards: the same entry works once the pool has room.
        await enter(db, entry)
    finally:
        await db.dispose()
