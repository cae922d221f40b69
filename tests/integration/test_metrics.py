"""Metrics on every backend: counts, errors, slow log, pool, leaks, bounds, lifecycle."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from asyncdb import AsyncDatabaseManager, ConflictError, QueryError, audit_context
from asyncdb._metrics import DEFAULT_MAX_STATEMENTS
from tests.integration.conftest import manager_for
from tests.integration.models import Counter, Item

HOOKED_EVENTS = (
    "do_execute",
    "do_executemany",
    "do_execute_no_params",
    "handle_error",
    "connect",
    "checkout",
    "checkin",
    "detach",
    "invalidate",
    "close",
)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


class StatementCounter:
    """Counts cursor executes independently of asyncdb, on its own listener."""

    def __init__(self) -> None:
        self.count = 0
        self.threads: set[int] = set()

    def __call__(self, *args: Any) -> None:
        self.count += 1
        self.threads.add(threading.get_ident())


@pytest.fixture
def counter(db: AsyncDatabaseManager) -> Iterator[StatementCounter]:
    counting = StatementCounter()
    sync_engine = db.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", counting)
    try:
        yield counting
    finally:
        event.remove(sync_engine, "before_cursor_execute", counting)


def our_listeners(engine: AsyncEngine) -> list[Any]:
    """asyncdb's instrumentation listeners still attached to ``engine`` and its pool."""
    sync_engine = engine.sync_engine
    found: list[Any] = []
    for name in HOOKED_EVENTS:
        if name.startswith("do_") or name == "handle_error":
            collection = getattr(sync_engine.dialect.dispatch, name)
        else:
            collection = getattr(sync_engine.pool.dispatch, name)
        found.extend(fn for fn in collection if fn.__module__ == "asyncdb._instrument")
    return found


async def test_counts_match_the_statements_issued(
    db: AsyncDatabaseManager, counter: StatementCounter
) -> None:
    db.metrics.reset()
    async with db.session() as session:
        session.add_all([Item(name=f"item-{i}") for i in range(3)])  # an ORM flush
        await session.commit()
    async with db.session() as session:
        await session.execute(insert(Counter), [{"value": i} for i in range(5)])  # executemany
        await session.commit()
    async with db.session(read_only=True) as session:
        assert len((await session.scalars(select(Item))).all()) == 3
    async with db.autocommit_session() as session:
        assert (await session.scalar(select(Counter.value).where(Counter.value == 4))) == 4
    with pytest.raises(QueryError):
        async with db.session() as session:
            await session.execute(text("SELECT * FROM no_such_table"))

    snap = db.metrics.snapshot()
    assert counter.count >= 5
    assert snap["queries"]["total"] == counter.count
    assert snap["queries"]["errors"] == 1
    assert sum(row["calls"] for row in db.metrics.statements()) == counter.count
    failing = [row for row in db.metrics.statements() if "no_such_table" in row["statement"]]
    assert [(row["calls"], row["errors"]) for row in failing] == [(1, 1)]
    assert snap["queries"]["min_seconds"] <= snap["queries"]["p50_seconds"]
    assert snap["queries"]["p99_seconds"] <= snap["queries"]["max_seconds"]
    json.dumps(snap, allow_nan=False)


async def test_hooks_run_on_the_event_loop_thread(
    db: AsyncDatabaseManager, counter: StatementCounter
) -> None:
    # Why the hot path needs no lock (see asyncdb._metrics): every hook fires on the
    # loop's thread, also with aiosqlite, whose sqlite3 calls run on a worker thread.
    pool_threads: set[int] = set()

    def on_pool_event(*args: Any) -> None:
        pool_threads.add(threading.get_ident())

    sync_engine = db.engine.sync_engine
    for name in ("checkout", "checkin"):
        event.listen(sync_engine, name, on_pool_event)
    try:
        async with db.session() as session:
            session.add(Item(name="x"))
            await session.commit()
        await asyncio.gather(*(db.health_check() for _ in range(5)))
    finally:
        for name in ("checkout", "checkin"):
            event.remove(sync_engine, name, on_pool_event)
    assert counter.threads == {threading.get_ident()}
    assert pool_threads == {threading.get_ident()}


async def test_concurrent_tasks_lose_no_counts(
    db: AsyncDatabaseManager, counter: StatementCounter
) -> None:
    db.metrics.reset()

    async def worker(n: int) -> None:
        for i in range(10):
            async with db.autocommit_session() as session:
                await session.execute(text(f"SELECT {n} + {i}"))

    await asyncio.gather(*(worker(n) for n in range(20)))
    assert db.metrics.snapshot()["queries"]["total"] == counter.count >= 200
    assert db.metrics.checkouts == 200


async def test_slow_query_lands_in_the_log_with_correlation_id_and_without_parameters(
    db: AsyncDatabaseManager, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    db.metrics.reset()
    db.metrics.slow_query_threshold = 0.05
    marker = "secret-param-7f3a9c"
    async with db.engine.connect() as conn:
        if backend == "postgres":
            statement = text("SELECT pg_sleep(:seconds), CAST(:marker AS TEXT)")
        elif backend == "mariadb":
            statement = text("SELECT SLEEP(:seconds), :marker")
        elif backend == "duckdb":
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None

            def sleep(seconds: float) -> int:
                time.sleep(seconds)
                return 0

            await driver.run(
                driver.raw.create_function, "asyncdb_test_sleep", sleep, ["DOUBLE"], "INTEGER"
            )
            statement = text("SELECT asyncdb_test_sleep(:seconds), CAST(:marker AS VARCHAR)")
        else:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.create_function("asyncdb_test_sleep", 1, time.sleep)
            statement = text("SELECT asyncdb_test_sleep(:seconds), :marker")
        await conn.execute(text("SELECT 1"))  # fast: stays out of the log
        with caplog.at_level(logging.WARNING, logger="asyncdb.slow_query"):
            async with audit_context(correlation_id="corr-slow-42"):
                await conn.execute(statement, {"seconds": 0.1, "marker": marker})

    snap = db.metrics.snapshot()
    assert snap["slow_queries"]["count"] == 1
    (entry,) = snap["slow_queries"]["recent"]
    assert "sleep" in entry["sql"].lower()
    assert entry["duration"] >= 0.1
    assert entry["correlation_id"] == "corr-slow-42"
    assert entry["time"].endswith("+00:00")
    assert marker not in json.dumps(snap)

    (record,) = [r for r in caplog.records if r.name == "asyncdb.slow_query"]
    assert record.levelno == logging.WARNING
    assert record.thread == threading.get_ident()  # recorded on the event-loop thread
    for field in ("sql", "duration", "time", "correlation_id"):
        assert getattr(record, field) == entry[field]
    assert marker not in record.getMessage()
    assert all(marker not in repr(value) for value in vars(record).values())


async def test_connection_held_past_leak_threshold_is_reported(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = manager_for(db_url, leak_threshold=0.2)
    await db.connect()
    try:
        with caplog.at_level(logging.WARNING, logger="asyncdb.connection_leak"):
            async with db.engine.connect() as conn:  # the leak: held on purpose
                await conn.execute(text("SELECT 1"))
                await eventually(lambda: db.metrics.leaks_detected >= 1)
                snap = db.metrics.snapshot()
                assert snap["leaks"]["outstanding"] == 1
                assert snap["pool"]["checked_out"] == 1
                assert snap["pool"]["longest_held_seconds"] > 0.2
        assert db.metrics.leaks_detected == 1  # warned once, not again at checkin
        assert db.metrics.snapshot()["leaks"]["outstanding"] == 0
        (record,) = [r for r in caplog.records if r.name == "asyncdb.connection_leak"]
        assert record.levelno == logging.WARNING
        message = record.getMessage()
        assert "test_connection_held_past_leak_threshold_is_reported" in message
        assert __file__ in message
        assert record.checked_out_at  # type: ignore[attr-defined]
    finally:
        await db.dispose()


async def test_short_checkouts_are_not_leaks(db: AsyncDatabaseManager) -> None:
    for _ in range(3):
        async with db.session() as session:
            await session.execute(text("SELECT 1"))
    assert db.metrics.check_leaks() == 0
    assert db.metrics.leaks_detected == 0


async def test_pool_figures(db: AsyncDatabaseManager) -> None:
    db.metrics.reset()
    async with db.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        pool = db.metrics.snapshot()["pool"]
        assert pool["checked_out"] == 1
        assert pool["size"] == db.engine.sync_engine.pool.size()  # type: ignore[attr-defined]
        assert pool["overflow"] is not None
        await conn.invalidate()
    async with db.engine.connect() as conn:  # replaces the invalidated connection
        await conn.execute(text("SELECT 1"))
    pool = db.metrics.snapshot()["pool"]
    assert pool["checked_out"] == 0
    assert pool["checkouts"] == 2
    assert db.metrics.checkout_wait.count == 2
    assert pool["checkout_wait"]["max_seconds"] >= 0
    assert pool["connections_invalidated"] == 1
    assert pool["connections_opened"] >= 1


async def test_transaction_figures_from_the_unit_of_work_hook(db: AsyncDatabaseManager) -> None:
    db.metrics.reset()
    db.notify_transaction_begin()
    db.notify_transaction_begin()
    db.notify_transaction_end("commit", 0.02)
    db.notify_transaction_end("rollback", 0.04)
    tx = db.metrics.snapshot()["transactions"]
    assert (tx["begun"], tx["committed"], tx["rolled_back"], tx["active"]) == (2, 1, 1, 0)
    assert tx["avg_seconds"] == pytest.approx(0.03)
    assert tx["max_seconds"] == pytest.approx(0.04)


async def test_health_check_includes_the_snapshot(db: AsyncDatabaseManager) -> None:
    db.metrics.reset()
    report = await db.health_check()
    assert report.healthy
    assert report.metrics["queries"]["total"] >= 1
    assert report.metrics["pool"]["checkouts"] == 1
    assert "transactions" in report.metrics
    json.dumps(report.to_dict(), allow_nan=False)


@pytest.mark.slow
async def test_ten_thousand_distinct_statements_leave_the_table_at_its_bound(
    db: AsyncDatabaseManager,
) -> None:
    db.metrics.reset()
    async with db.engine.connect() as conn:
        for i in range(10_000):
            await conn.exec_driver_sql(f"SELECT {i} AS c{i}")
    statements = db.metrics.snapshot()["statements"]
    assert statements["tracked"] == DEFAULT_MAX_STATEMENTS
    assert len(db.metrics.statements()) == DEFAULT_MAX_STATEMENTS
    assert statements["evicted"] >= 10_000 - DEFAULT_MAX_STATEMENTS
    assert db.metrics.snapshot()["queries"]["total"] >= 10_000


async def test_dispose_removes_every_hook(db_url: str) -> None:
    db = manager_for(db_url)
    await db.connect()
    engine = db.engine
    try:
        assert len(our_listeners(engine)) == len(HOOKED_EVENTS)
        assert "connect" in vars(engine.sync_engine.pool)  # the checkout-wait timer
    finally:
        await db.dispose()
    assert our_listeners(engine) == []
    assert "connect" not in vars(engine.sync_engine.pool)
    assert db.metrics.snapshot()["pool"]["size"] is None


async def test_metrics_survive_an_engine_dispose(db: AsyncDatabaseManager) -> None:
    await db.engine.dispose()  # the engine gets a new pool
    db.metrics.reset()
    for _ in range(3):
        async with db.autocommit_session() as session:
            await session.execute(text("SELECT 1"))
    assert db.metrics.checkouts == 3
    assert db.metrics.checkout_wait.count >= 2  # the new pool is timed from its 1st checkout
    assert db.metrics.snapshot()["pool"]["checked_out"] == 0


async def test_metrics_off_installs_nothing(db_url: str) -> None:
    db = manager_for(db_url, metrics=False)
    await db.connect()
    try:
        async with db.session() as session:
            await session.execute(text("SELECT 1"))
        assert our_listeners(db.engine) == []
        snap = db.metrics.snapshot()
        assert snap["enabled"] is False
        assert snap["queries"]["total"] == 0
    finally:
        await db.dispose()


async def test_dispose_after_an_engine_dispose_removes_every_hook(db_url: str) -> None:
    db = manager_for(db_url)
    await db.connect()
    engine = db.engine
    try:
        await engine.dispose()  # a new pool, which inherits the pool listeners
        async with db.autocommit_session() as session:
            await session.execute(text("SELECT 1"))
        async with db.autocommit_session() as session:
            await session.execute(text("SELECT 1"))
    finally:
        await db.dispose()
    assert our_listeners(engine) == []
    assert "connect" not in vars(engine.sync_engine.pool)


async def test_cancelled_statement_counts_once_as_an_error(postgres_url: str) -> None:
    db = manager_for(postgres_url)
    await db.connect()
    try:
        db.metrics.reset()
        with pytest.raises(asyncio.TimeoutError):
            async with db.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT pg_sleep(5)")), 0.2)
        snap = db.metrics.snapshot()
        assert (snap["queries"]["total"], snap["queries"]["errors"]) == (1, 1)
        assert (await db.health_check()).healthy
    finally:
        await db.dispose()


async def test_failed_commit_counts_as_an_error(postgres_url: str) -> None:
    db = manager_for(postgres_url)
    await db.connect()
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TABLE t_deferred (v INTEGER, "
                    "CONSTRAINT t_deferred_v UNIQUE (v) DEFERRABLE INITIALLY DEFERRED)"
                )
            )
        db.metrics.reset()
        with pytest.raises(ConflictError):
            async with db.session() as session:
                await session.execute(text("INSERT INTO t_deferred (v) VALUES (1), (1)"))
                await session.commit()  # the unique check runs, and fails, at COMMIT
        snap = db.metrics.snapshot()
        assert snap["queries"]["total"] == 1  # the INSERT, which succeeded
        assert snap["queries"]["errors"] == 1  # the COMMIT
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS t_deferred"))
        await db.dispose()
