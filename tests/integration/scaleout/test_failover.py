"""Failover: a multi-host primary URL follows a promotion; no committed write is lost.

A throwaway primary (initdb, its own port) and a streaming standby of it; the main
cluster is not involved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from asyncdb import AsyncUnitOfWork, DatabaseUnavailableError, run_tx
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.models import Counter
from tests.integration.scaleout.servers import (
    MAIN_HOST,
    PgServer,
    new_primary,
    standby_of,
    unavailable,
)

pytestmark = pytest.mark.scaleout

WRITERS = 20
CONNECT_TIMEOUT = 2.0


@pytest.fixture
def pair() -> Iterator[tuple[PgServer, PgServer]]:
    try:
        primary = new_primary()
    except (RuntimeError, OSError) as exc:
        unavailable(f"could not start a throwaway primary ({exc})")
    try:
        standby = standby_of(primary.port, prefix="asyncdb-failover-standby-")
    except BaseException:
        primary.remove()
        raise
    try:
        yield primary, standby
    finally:
        standby.remove()
        primary.remove()


def multi_host_url(*servers: PgServer) -> str:
    hosts = "&".join(f"host={MAIN_HOST}:{server.port}" for server in servers)
    return f"postgresql+asyncpg://postgres@/postgres?{hosts}&target_session_attrs=read-write"


async def test_writers_follow_a_promotion_without_losing_a_commit(
    pair: tuple[PgServer, PgServer],
) -> None:
    primary, standby = pair
    db = manager_for(
        multi_host_url(primary, standby), connect_timeout=CONNECT_TIMEOUT, pool_size=20
    )
    await db.connect()
    committed: set[int] = set()
    surfaced: list[BaseException] = []
    after_promotion = [0] * WRITERS
    promoted = asyncio.Event()
    stop = asyncio.Event()

    async def insert(uow: AsyncUnitOfWork, ident: int) -> None:
        await uow.get_repository(Counter).create(id=ident, value=ident)

    async def writer(number: int) -> None:
        for seq in range(1_000_000):
            if stop.is_set():
                return
            ident = number * 1_000_000 + seq
            try:
                await run_tx(insert, ident, db=db, retries=3, backoff=0.05)
            except DatabaseUnavailableError as exc:
                surfaced.append(exc)
                await asyncio.sleep(0.05)  # back off before the next write
                continue
            committed.add(ident)
            if promoted.is_set():
                after_promotion[number] += 1

    try:
        await reset_schema(db)
        tasks = [asyncio.create_task(writer(n)) for n in range(WRITERS)]
        try:
            warm_until = time.monotonic() + 60
            while len(committed) < 200:
                assert time.monotonic() < warm_until, (len(committed), surfaced[:3])
                await asyncio.sleep(0.01)
            await asyncio.to_thread(primary.stop, "fast")
            await asyncio.to_thread(standby.promote)
            promoted.set()
            started = time.monotonic()
            while min(after_promotion) < 5:
                assert time.monotonic() - started < CONNECT_TIMEOUT + 15, after_promotion
                await asyncio.sleep(0.01)
            resumed_after = time.monotonic() - started
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        # Every write reported committed is on the new primary.
        async with AsyncUnitOfWork(db, read_only=True) as uow:
            rows = set((await uow.session.scalars(select(Counter.id))).all())
        assert committed <= rows, sorted(committed - rows)[:10]
        assert standby.sql("SELECT pg_is_in_recovery()") == "f"
        # Only the documented error surfaced during the outage.
        assert all(isinstance(exc, DatabaseUnavailableError) for exc in surfaced)
        print(f"failover: {len(committed)} commits, {len(surfaced)} errors, "
              f"writers resumed {resumed_after:.2f} s after promotion")  # fmt: skip
    finally:
        await db.dispose()
