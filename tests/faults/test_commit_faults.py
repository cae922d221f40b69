"""Network faults around COMMIT on real PostgreSQL, through a loopback fault proxy.

A lost reply to COMMIT leaves the outcome unknown: the transaction may have committed.
``run_tx`` and units of work must then report it (``CommitOutcomeUnknownError``) and never
run the work again; failures before COMMIT was sent are still retried.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

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
from tests.integration.entry_points import ENTRIES, enter
from tests.integration.models import Counter


@pytest.fixture
async def direct(direct: AsyncDatabaseManager) -> AsyncDatabaseManager:
    """The shared ``direct`` manager, with the counter the tests increment."""
    await Repository(Counter, direct).create(id=1, value=0)
    return direct


async def _value(db: AsyncDatabaseManager) -> int:
    return (await Repository(Counter, db).get(1)).value


async def _increment(uow: AsyncUnitOfWork, calls: list[int]) -> None:
    calls.append(1)
    row = (
        await uow.session.execute(select(Counter).where(Counter.id == 1).with_for_update())
    ).scalar_one()
    row.value += 1


async def test_run_tx_never_reruns_work_whose_commit_reply_was_lost(
    proxy: FaultProxy, proxied: AsyncDatabaseManager, direct: AsyncDatabaseManager
) -> None:
    db = proxied
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


async def test_unit_commit_with_lost_reply_is_reported_not_retried(
    proxy: FaultProxy, proxied: AsyncDatabaseManager, direct: AsyncDatabaseManager
) -> None:
    db = proxied
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


async def test_connection_cut_before_commit_is_retried(
    proxy: FaultProxy, proxied: AsyncDatabaseManager, direct: AsyncDatabaseManager
) -> None:
    db = proxied
    fired = proxy.cut_on(b"FOR UPDATE")  # mid-transaction, before COMMIT is sent
    calls: list[int] = []
    await run_tx(_increment, calls, db=db, retries=3, backoff=0)
    assert fired.is_set()
    assert calls == [1, 1]  # the first attempt died before COMMIT; retried once
    assert await _value(direct) == 1  # exactly one increment committed


async def test_statement_cut_mid_flight_in_a_unit_leaves_nothing(
    proxy: FaultProxy, proxied: AsyncDatabaseManager, direct: AsyncDatabaseManager
) -> None:
    db = proxied
    proxy.cut_on(b"UPDATE t_counter")
    with pytest.raises(DatabaseUnavailableError) as info:
        async with AsyncUnitOfWork(db) as uow:
            await _increment(uow, [])
    assert not isinstance(info.value, CommitOutcomeUnknownError)
    assert await _value(direct) == 0


@pytest.mark.parametrize("entry", ["connect", *ENTRIES])
async def test_black_holed_server_fails_within_connect_timeout(
    postgres_url: str, proxy: FaultProxy, entry: str
) -> None:
    timeout = 0.5
    db = manager_for(proxy.url_for(postgres_url), connect_retries=1, connect_timeout=timeout)
    try:
        if entry != "connect":
            await db.connect()
            await reset_schema(db)
            await db.engine.dispose()  # no pooled connection left: the next one is new
        proxy.blackhole = True
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError, match="connect"):
            await (db.connect() if entry == "connect" else enter(db, entry))
        elapsed = time.monotonic() - started
    finally:
        await db.dispose()
    assert elapsed < timeout + 1.0, f"{entry} waited {elapsed:.2f} s"
