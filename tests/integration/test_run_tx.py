"""run_tx: a unit of work per attempt, retried on serialization failures and deadlocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select, text, update

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    ConfigurationError,
    ConflictError,
    DatabaseUnavailableError,
    Repository,
    RetryableError,
    ValidationError,
    get_audit_logs,
    run_tx,
)
from tests.integration.conftest import manager_for, names, reset_schema
from tests.integration.models import Counter, Item


def serialization_failure() -> RetryableError:
    return RetryableError("simulated serialization failure", sqlstate="40001")


# -- every backend ---------------------------------------------------------------------


async def test_run_tx_commits_and_returns_the_result(db: AsyncDatabaseManager) -> None:
    async def create(uow: AsyncUnitOfWork, name: str, qty: int) -> int:
        item = await uow.get_repository(Item).create(name=name, qty=qty)
        return item.id

    item_id = await run_tx(create, "a", 3, db=db, user_id=42, correlation_id="req-7")
    assert isinstance(item_id, int)
    assert await names(db) == ["a"]
    (log,) = await get_audit_logs(db, table_name="t_item")
    assert (log.user_id, log.correlation_id, log.entity_id) == ("42", "req-7", str(item_id))


async def test_run_tx_retries_the_whole_function(db: AsyncDatabaseManager) -> None:
    calls = 0

    async def flaky(uow: AsyncUnitOfWork) -> str:
        nonlocal calls
        calls += 1
        await uow.get_repository(Item).create(name=f"attempt-{calls}")
        if calls < 3:
            raise serialization_failure()
        return "done"

    db.metrics.reset()
    assert await run_tx(flaky, db=db, retries=3, backoff=0.001) == "done"
    assert calls == 3
    assert await names(db) == ["attempt-3"]  # the failed attempts were rolled back
    figures = db.metrics.snapshot()["transactions"]
    assert (figures["begun"], figures["committed"], figures["rolled_back"]) == (3, 1, 2)
    assert db.pool_status()["checked_out"] == 0


async def test_run_tx_gives_up_after_the_last_retry(db: AsyncDatabaseManager) -> None:
    calls = 0

    async def always_conflicts(uow: AsyncUnitOfWork) -> None:
        nonlocal calls
        calls += 1
        await uow.get_repository(Item).create(name="never")
        raise RetryableError("simulated deadlock", sqlstate="40P01")

    with pytest.raises(RetryableError):
        await run_tx(always_conflicts, db=db, retries=2, backoff=0.001)
    assert calls == 3
    calls = 0
    with pytest.raises(RetryableError):
        await run_tx(always_conflicts, db=db, retries=0)
    assert calls == 1
    assert await names(db) == []


async def test_run_tx_does_not_retry_integrity_or_other_errors(db: AsyncDatabaseManager) -> None:
    await Repository(Item, db).create(name="first", sku="dup")
    calls = 0

    async def duplicate(uow: AsyncUnitOfWork) -> None:
        nonlocal calls
        calls += 1
        await uow.get_repository(Item).create(name="second", sku="dup")

    with pytest.raises(ConflictError):
        await run_tx(duplicate, db=db, retries=5, backoff=0.001)
    assert calls == 1

    for error in (ValidationError("bad input"), KeyError("k"), DatabaseUnavailableError("x")):
        calls = 0

        async def fails(uow: AsyncUnitOfWork, error: Exception = error) -> None:
            nonlocal calls
            calls += 1
            raise error

        with pytest.raises(type(error)):
            await run_tx(fails, db=db, retries=5, backoff=0.001)
        assert calls == 1
    assert await names(db) == ["first"]


async def test_run_tx_validates_its_arguments(db: AsyncDatabaseManager) -> None:
    async def fn(uow: AsyncUnitOfWork) -> None:
        raise AssertionError("not called")

    for bad in (-1, True, 1.5, "3"):
        with pytest.raises(ConfigurationError, match="retries"):
            await run_tx(fn, db=db, retries=bad)  # type: ignore[arg-type]
    for bad_backoff in (-0.1, True, "1"):
        with pytest.raises(ConfigurationError, match="backoff"):
            await run_tx(fn, db=db, backoff=bad_backoff)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="isolation_level"):
        await run_tx(fn, db=db, isolation_level="sometimes")


@pytest.mark.requires("savepoint")
async def test_run_tx_inside_a_unit_joins_it_and_runs_once(db: AsyncDatabaseManager) -> None:
    calls = 0

    async def conflict(uow: AsyncUnitOfWork) -> None:
        nonlocal calls
        calls += 1
        assert uow.is_nested
        await uow.get_repository(Item).create(name="inner")
        raise serialization_failure()

    async def works(uow: AsyncUnitOfWork) -> None:
        assert uow.is_nested
        await uow.get_repository(Item).create(name="inner-kept")

    async with AsyncUnitOfWork(db) as outer:
        await outer.get_repository(Item).create(name="outer")
        with pytest.raises(RetryableError):
            await run_tx(conflict, db=db, retries=5, backoff=0.001)
        assert calls == 1
        await run_tx(works, db=db)
    assert await names(db) == ["inner-kept", "outer"]


async def test_run_tx_isolation_level(db: AsyncDatabaseManager, is_postgres: bool) -> None:
    async def level(uow: AsyncUnitOfWork) -> str | None:
        if not is_postgres:
            return None
        return str(await uow.session.scalar(select(func.current_setting("transaction_isolation"))))

    result = await run_tx(level, db=db, isolation_level="REPEATABLE READ")
    assert result == ("repeatable read" if is_postgres else None)


async def test_run_tx_is_not_retried_after_a_cancel(db: AsyncDatabaseManager) -> None:
    calls = 0
    started = asyncio.Event()

    async def slow(uow: AsyncUnitOfWork) -> None:
        nonlocal calls
        calls += 1
        await uow.get_repository(Item).create(name="cancelled")
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(run_tx(slow, db=db, retries=5))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1
    assert db.pool_status()["checked_out"] == 0
    assert await names(db) == []


# -- PostgreSQL: real conflicts ----------------------------------------------------------


#: Connections of the contention tests' pool: modest, as other test runs may share the
#: server (max_connections is 100 by default).
PG_POOL = 20


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[AsyncDatabaseManager]:
    """A PostgreSQL manager for the contention tests."""
    async with manager_for(postgres_url, pool_size=PG_POOL, max_overflow=0) as manager:
        await reset_schema(manager)
        yield manager
        assert manager.pool_status()["checked_out"] == 0


@pytest.mark.slow
@pytest.mark.postgres_only
async def test_serializable_counter_under_contention(pg: AsyncDatabaseManager) -> None:
    """50 SERIALIZABLE read-modify-write increments of one row: no update is lost.

    Every round of conflicts lets one writer through, so a hot row needs far more than
    the default 3 retries; 25 keep the test safe with the jittered backoff.
    """
    async with AsyncUnitOfWork(pg) as uow:
        uow.session.add(Counter(id=1, value=0))
    attempts: list[int] = []

    async def increment(uow: AsyncUnitOfWork) -> None:
        attempts.append(1)
        counter = await uow.session.get(Counter, 1)
        assert counter is not None
        await asyncio.sleep(0)  # let the others read the same value
        counter.value += 1

    pg.metrics.reset()
    await asyncio.gather(
        *(
            run_tx(increment, db=pg, isolation_level="SERIALIZABLE", retries=25, backoff=0.01)
            for _ in range(50)
        )
    )
    async with pg.session() as session:
        assert await session.scalar(select(Counter.value).where(Counter.id == 1)) == 50
    assert len(attempts) > 50, "no serialization failure happened; the test proved nothing"
    figures = pg.metrics.snapshot()["transactions"]
    assert figures["committed"] == 50
    assert figures["rolled_back"] == len(attempts) - 50


@pytest.mark.slow
@pytest.mark.postgres_only
async def test_deadlocks_are_retried(pg: AsyncDatabaseManager) -> None:
    """20 pairs lock two rows in opposite order; every one of the 40 tasks commits.

    The two tasks of a pair wait for each other while holding a connection, so at most
    PG_POOL / 2 pairs run at once: a pool too small for both would stall the pair.
    """
    async with AsyncUnitOfWork(pg) as uow:
        uow.session.add_all([Counter(id=n, value=0) for n in range(1, 41)])
    attempts = [0] * 40
    slots = asyncio.Semaphore(PG_POOL // 2)

    async def pair(p: int) -> None:
        async with slots:
            await run_pair(p)

    async def run_pair(p: int) -> None:
        first_locked = [asyncio.Event(), asyncio.Event()]
        row_a, row_b = 2 * p + 1, 2 * p + 2

        async def lock_both(uow: AsyncUnitOfWork, me: int, rows: tuple[int, int]) -> None:
            attempts[2 * p + me] += 1
            for step, row in enumerate(rows):
                await uow.session.execute(
                    update(Counter).where(Counter.id == row).values(value=Counter.value + 1)
                )
                if step == 0:
                    # both hold their first row before either asks for its second
                    first_locked[me].set()
                    await asyncio.wait_for(first_locked[1 - me].wait(), 20)

        await asyncio.gather(
            run_tx(lock_both, 0, (row_a, row_b), db=pg, retries=5, backoff=0.01),
            run_tx(lock_both, 1, (row_b, row_a), db=pg, retries=5, backoff=0.01),
        )

    await asyncio.gather(*(pair(p) for p in range(20)))
    assert sum(attempts) > 40, "no deadlock happened; the test proved nothing"
    async with pg.session() as session:
        values = (await session.scalars(select(Counter.value).order_by(Counter.id))).all()
    assert values == [2] * 40  # each of the 40 tasks committed both its updates


@pytest.mark.postgres_only
async def test_unique_violation_is_attempted_once(pg: AsyncDatabaseManager) -> None:
    await Repository(Item, pg).create(name="first", sku="taken")
    calls = 0

    async def duplicate(uow: AsyncUnitOfWork) -> None:
        nonlocal calls
        calls += 1
        await uow.get_repository(Item).create(name="second", sku="taken")

    with pytest.raises(ConflictError) as caught:
        await run_tx(duplicate, db=pg, retries=5, isolation_level="SERIALIZABLE")
    assert calls == 1
    assert caught.value.sqlstate == "23505"


@pytest.mark.postgres_only
async def test_dropped_connection_is_retried(pg: AsyncDatabaseManager, postgres_url: str) -> None:
    """The server ends the connection mid-transaction; the next attempt gets a fresh one."""
    calls = 0

    async def work(uow: AsyncUnitOfWork) -> str:
        nonlocal calls
        calls += 1
        await uow.get_repository(Item).create(name=f"attempt-{calls}")
        if calls == 1:
            pid = await uow.session.scalar(text("SELECT pg_backend_pid()"))
            async with manager_for(postgres_url) as admin, admin.autocommit_session() as s:
                await s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await uow.session.execute(text("SELECT 1"))
        return "ok"

    assert await run_tx(work, db=pg, retries=2, backoff=0.001) == "ok"
    assert calls == 2
    assert await names(pg) == ["attempt-2"]
