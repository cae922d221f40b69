"""A COMMIT whose reply was lost is reported, never run again, with routing and pgbouncer.

The primary is reached through the loopback fault proxy of ``tests/faults``; the
replica is the streaming standby of the main cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    CommitOutcomeUnknownError,
    Repository,
    run_tx,
)
from tests.faults.proxy import FaultProxy
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.models import Counter
from tests.integration.scaleout.conftest import make_routed
from tests.integration.scaleout.servers import PgServer

pytestmark = pytest.mark.scaleout


@pytest.fixture
async def direct(postgres_url: str) -> AsyncIterator[AsyncDatabaseManager]:
    """A manager straight to the primary, to read the truth after a fault."""
    db = manager_for(postgres_url)
    await db.connect()
    try:
        yield db
    finally:
        await db.dispose()


async def value(db: AsyncDatabaseManager) -> int:
    return (await Repository(Counter, db, route="primary").get(1)).value


async def increment(uow: AsyncUnitOfWork, calls: list[int]) -> None:
    calls.append(1)
    row = (
        await uow.session.execute(select(Counter).where(Counter.id == 1).with_for_update())
    ).scalar_one()
    row.value += 1


async def test_routed_run_tx_reports_an_unknown_commit_and_keeps_reads_on_the_primary(
    postgres_url: str,
    standby: PgServer,
    database: str,
    proxy: FaultProxy,
    direct: AsyncDatabaseManager,
) -> None:
    db = await make_routed(proxy.url_for(postgres_url), standby, database, connect_retries=1)
    try:
        # In a task of its own, so its write does not count as the request's.
        await asyncio.create_task(Repository(Counter, db).create(id=1, value=0))
        router = db.router
        assert router is not None

        async def request() -> None:
            # A new task, as a new request: no earlier write of this test counts.
            fired = proxy.drop_commit_reply()
            calls: list[int] = []
            with pytest.raises(CommitOutcomeUnknownError, match="may or may not have committed"):
                await run_tx(increment, calls, db=db, retries=5, backoff=0)
            assert fired.is_set()
            assert calls == [1]  # run once: retrying could apply it twice
            # The write may have committed: this task's reads stay on the primary.
            sticky = router.primary_reads["sticky"]
            assert (await Repository(Counter, db).get(1)).value == 1
            assert router.primary_reads["sticky"] == sticky + 1

        await asyncio.create_task(request())
        assert await value(direct) == 1  # the server did commit, exactly once
    finally:
        await db.dispose()


async def test_standalone_write_behind_pgbouncer_reports_an_unknown_commit(
    postgres_url: str, proxy: FaultProxy, direct: AsyncDatabaseManager
) -> None:
    # pgbouncer=True: no autocommit, so a single-statement write sends a real COMMIT
    # (plain PostgreSQL accepts what pgbouncer in transaction mode needs).
    db = manager_for(proxy.url_for(postgres_url), pgbouncer=True, connect_retries=1)
    await db.connect()
    try:
        await reset_schema(db)
        counters = Repository(Counter, db)
        await counters.create(id=1, value=0)
        fired = proxy.drop_commit_reply()
        with pytest.raises(CommitOutcomeUnknownError):
            await counters.update(1, value=7)
        assert fired.is_set()
        assert await value(direct) == 7  # it did commit
    finally:
        await db.dispose()
