"""Network faults around COMMIT on real PostgreSQL, through a loopback fault proxy.

A lost reply to COMMIT leaves the outcome unknown: the transaction may have committed.
``run_tx`` and units of work must then report it (``CommitOutcomeUnknownError``) and never
run the work again; failures before COMMIT was sent are still retried.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    CommitOutcomeUnknownError,
    DatabaseUnavailableError,
    Repository,
    run_tx,
)
from tests.faults.proxy import FaultProxy
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.models import Counter


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[FaultProxy]:
    url = make_url(postgres_url)
    async with FaultProxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


def _through(postgres_url: str, proxy: FaultProxy) -> str:
    url = make_url(postgres_url).set(host="127.0.0.1", port=proxy.port)
    return url.render_as_string(hide_password=False)


@pytest.fixture
async def direct(postgres_url: str) -> AsyncIterator[AsyncDatabaseManager]:
    """A manager straight to the server, to read the truth after a fault."""
    db = manager_for(postgres_url)
    await db.connect()
    await reset_schema(db)
    await Repository(Counter, db).create(id=1, value=0)
    try:
        yield db
    finally:
        await db.dispose()


async def _value(db: AsyncDatabaseManager) -> int:
    return (await Repository(Counter, db).get(1)).value


async def _increment(uow: AsyncUnitOfWork, calls: list[int]) -> None:
    calls.append(1)
    row = (
        await uow.session.execute(select(Counter).where(Counter.id == 1).with_for_update())
    ).scalar_one()
    row.value += 1


async def test_run_tx_never_reruns_work_whose_commit_reply_was_lost(
    postgres_url: str, proxy: FaultProxy, direct: AsyncDatabaseManager
) -> None:
    db = manager_for(_through(postgres_url, proxy), connect_retries=1, connect_timeout=2.0)
    await db.connect()
    try:
        fired = proxy.drop_commit_reply()
        calls: list[int] = []
        with pytest.raises(CommitOutcomeUnknownError, match="may or may not have committed"):
            await run_tx(_increment, calls, db=db, retries=5, backoff=0)
        assert fired.is_set()
        assert calls == [1]  # run once, not retried
        assert await _value(direct) == 1  # the server did commit
        # The manager recovers: the next transaction runs normally.
        await run_tx(_increment, calls, db=db, backoff=0)
        assert await _value(direct) == 2
    finally:
        await db.dispose()


async def test_unit_commit_with_lost_reply_is_reported_not_retried(
    postgres_url: str, proxy: FaultProxy, direct: AsyncDatabaseManager
) -> None:
    db = manager_for(_through(postgres_url, proxy), connect_retries=1, connect_timeout=2.0)
    await db.connect()
    try:
        proxy.drop_commit_reply()
        with pytest.raises(CommitOutcomeUnknownError) as info:
            async with AsyncUnitOfWork(db) as uow:
                await _increment(uow, [])
        assert isinstance(info.value, DatabaseUnavailableError)
        assert await _value(direct) == 1
        # An explicit commit() reports the same way.
        proxy.drop_commit_reply()
        with pytest.raises(CommitOutcomeUnknownError):
            async with AsyncUnitOfWork(db) as uow:
                await _increment(uow, [])
                await uow.commit()
        assert await _value(direct) == 2
    finally:
        await db.dispose()


async def test_connection_cut_before_commit_is_retried(
    postgres_url: str, proxy: FaultProxy, direct: AsyncDatabaseManager
) -> None:
    db = manager_for(_through(postgres_url, proxy), connect_retries=1, connect_timeout=2.0)
    await db.connect()
    try:
        fired = proxy.cut_on(b"FOR UPDATE")  # mid-transaction, before COMMIT is sent
        calls: list[int] = []
        await run_tx(_increment, calls, db=db, retries=3, backoff=0)
        assert fired.is_set()
        assert calls == [1, 1]  # the first attempt died before COMMIT; retried once
        assert await _value(direct) == 1  # exactly one increment committed
    finally:
        await db.dispose()


async def test_statement_cut_mid_flight_in_a_unit_leaves_nothing(
    postgres_url: str, proxy: FaultProxy, direct: AsyncDatabaseManager
) -> None:
    db = manager_for(_through(postgres_url, proxy), connect_retries=1, connect_timeout=2.0)
    await db.connect()
    try:
        proxy.cut_on(b"UPDATE t_counter")
        with pytest.raises(DatabaseUnavailableError) as info:
            async with AsyncUnitOfWork(db) as uow:
                await _increment(uow, [])
        assert not isinstance(info.value, CommitOutcomeUnknownError)
        assert await _value(direct) == 0
    finally:
        await db.dispose()


@pytest.mark.parametrize("entry", ["connect", "session", "unit", "run_tx", "read", "write"])
async def test_black_holed_server_fails_within_connect_timeout(
    postgres_url: str, proxy: FaultProxy, entry: str
) -> None:
    timeout = 1.0
    db = manager_for(_through(postgres_url, proxy), connect_retries=1, connect_timeout=timeout)
    if entry != "connect":
        await db.connect()
        await db.engine.dispose()  # no pooled connection left: the next one is new
    proxy.blackhole = True
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match="connect"):
        await _enter(db, entry)
    elapsed = time.monotonic() - started
    await db.dispose()
    assert elapsed < timeout + 1.0, f"{entry} waited {elapsed:.2f} s"


async def _enter(db: AsyncDatabaseManager, entry: str) -> Any:
    if entry == "connect":
        return await db.connect()
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
    return await Repository(Counter, db).create(value=1)


async def test_read_on_a_pooled_connection_that_died_is_repeated_once(
    postgres_url: str, proxy: FaultProxy, direct: AsyncDatabaseManager
) -> None:
    db = manager_for(_through(postgres_url, proxy), connect_retries=1, connect_timeout=2.0)
    await db.connect()
    try:
        before = proxy.connections
        fired = proxy.cut_on(b"t_counter")
        row = await Repository(Counter, db).get(1)
        assert fired.is_set() and row.value == 0
        assert proxy.connections == before + 1  # the repeat ran on a new connection
    finally:
        await db.dispose()
