"""AsyncDatabaseManager on every backend, plus PostgreSQL-only pool behaviour."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
from sqlalchemy import select, text

from asyncdb import (
    AsyncDatabaseManager,
    ConfigurationError,
    DatabaseUnavailableError,
    ManagerState,
    PoolTimeoutError,
    StateError,
)
from tests.integration.conftest import manager_for
from tests.integration.models import Counter, Item


async def test_session_round_trip(db: AsyncDatabaseManager) -> None:
    async with db.session() as session:
        session.add(Item(name="a"))
        await session.commit()
    async with db.session(read_only=True) as session:
        names = (await session.scalars(select(Item.name))).all()
    assert names == ["a"]


async def test_read_only_session_refuses_orm_writes(db: AsyncDatabaseManager) -> None:
    from asyncdb import TransactionError

    async with db.session(read_only=True) as session:
        session.add(Item(name="nope"))
        with pytest.raises(TransactionError, match="read-only"):
            await session.flush()
        await session.rollback()
    async with db.session() as session:
        assert (await session.scalars(select(Item))).all() == []


async def test_state_errors_before_connect_and_after_dispose(db_url: str) -> None:
    db = manager_for(db_url)
    with pytest.raises(StateError, match="connect"):
        db.session()
    await db.connect()
    with pytest.raises(StateError, match="already connected"):
        await db.connect()
    await db.dispose()
    assert db.state is ManagerState.DISPOSED
    with pytest.raises(StateError, match="disposed"):
        db.session()
    with pytest.raises(StateError, match="disposed"):
        await db.connect()
    await db.dispose()  # a second dispose is harmless


async def test_health_check_reports_backend_and_masked_url(db: AsyncDatabaseManager) -> None:
    report = await db.health_check()
    assert report.healthy
    assert report.error is None
    assert report.latency_ms is not None
    assert report.latency_ms >= 0
    assert report.backend == db.backend
    assert "checked_out" in report.pool
    data = report.to_dict()
    assert data["healthy"] is True
    assert "transactions" in data["metrics"]


async def test_sqlite_rollback_undoes_released_savepoint(db: AsyncDatabaseManager) -> None:
    async with db.session() as session:
        await session.begin()
        async with session.begin_nested():
            session.add(Item(name="inside savepoint"))
        await session.rollback()
    async with db.session() as session:
        assert (await session.scalars(select(Item))).all() == []


async def test_concurrent_read_modify_write_loses_no_update(db: AsyncDatabaseManager) -> None:
    async with db.session() as session:
        session.add(Counter(id=1, value=0))
        await session.commit()

    async def increment() -> None:
        async with db.session() as session, session.begin():
            row = await session.get(Counter, 1, with_for_update=True)
            assert row is not None
            await asyncio.sleep(0)  # let the other tasks run between read and write
            row.value += 1

    await asyncio.gather(*(increment() for _ in range(20)))
    async with db.session() as session:
        value = await session.scalar(select(Counter.value).where(Counter.id == 1))
    assert value == 20


async def test_sqlite_file_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    db = manager_for(f"sqlite+aiosqlite:///{tmp_path / 'wal.db'}")
    async with db:
        async with db.engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        assert mode == "wal"
        assert fks == 1
        assert db.journal_mode == "wal"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connect_retry_makes_exactly_the_configured_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = _closed_port()
    db = AsyncDatabaseManager(
        f"postgresql+asyncpg://app:sup3rsecret@127.0.0.1:{port}/db",
        connect_retries=4,
        retry_backoff=0.01,
    )
    with (
        caplog.at_level(logging.WARNING, logger="asyncdb"),
        pytest.raises(DatabaseUnavailableError) as info,
    ):
        await db.connect()
    assert db.connect_attempts == 4
    retries = [r for r in caplog.records if "Connection attempt" in r.getMessage()]
    assert len(retries) == 3
    text_ = str(info.value)
    assert "sup3rsecret" not in text_
    assert f"127.0.0.1:{port}" in text_
    assert all("sup3rsecret" not in r.getMessage() for r in caplog.records)
    assert db.state is ManagerState.NEW


async def test_bad_credentials_are_not_retried(postgres_url: str) -> None:
    url = postgres_url.replace("postgres@", "no_such_role:pw@", 1)
    db = AsyncDatabaseManager(url, connect_retries=5, retry_backoff=0.01)
    with pytest.raises(ConfigurationError, match="credentials") as info:
        await db.connect()
    assert db.connect_attempts == 1
    assert ":pw@" not in str(info.value)


async def test_health_check_on_dead_url_returns_unhealthy_within_timeout() -> None:
    db = AsyncDatabaseManager(f"postgresql+asyncpg://u:secret@127.0.0.1:{_closed_port()}/db")
    report = await asyncio.wait_for(db.health_check(timeout=2.0), 5.0)
    assert not report.healthy
    assert report.error
    assert "secret" not in str(report.to_dict())

    # a black hole on loopback: the kernel accepts the TCP connection, nobody answers
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        black_hole = AsyncDatabaseManager(f"postgresql+asyncpg://u@127.0.0.1:{port}/db")
        report = await asyncio.wait_for(black_hole.health_check(timeout=0.5), 5.0)
    assert not report.healthy
    assert "0.5" in (report.error or "")


async def test_pool_exhaustion_raises_pool_timeout(postgres_url: str) -> None:
    db = manager_for(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.3)
    async with db, db.engine.connect() as held:
        await held.execute(text("SELECT 1"))
        with pytest.raises(PoolTimeoutError, match="pool_timeout"):
            async with db.session() as session:
                await session.execute(text("SELECT 1"))


async def _terminate_pool_backends(db: AsyncDatabaseManager, admin_url: str) -> None:
    import asyncpg

    dsn = admin_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn)
    try:
        pids = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1"
            " AND datname = $2 AND pid <> pg_backend_pid()",
            db.settings.application_name,
            db.settings.parsed_url.database,
        )
        assert pids, "the pool should hold open connections"
        for row in pids:
            await conn.execute("SELECT pg_terminate_backend($1)", row["pid"])
        # wait until the server has really ended them (a condition, not a sleep)
        for _ in range(1000):
            left = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                [r["pid"] for r in pids],
            )
            if left == 0:
                break
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def test_killed_backends_are_never_handed_out(postgres_url: str) -> None:
    app_name = "asyncdb-kill-test"
    db = manager_for(postgres_url, pool_size=4, application_name=app_name)
    async with db:

        async def one() -> int:
            async with db.session() as session:
                return int((await session.execute(text("SELECT 1"))).scalar_one())

        assert await asyncio.gather(*(one() for _ in range(4))) == [1, 1, 1, 1]
        await _terminate_pool_backends(db, postgres_url)
        results = [await one() for _ in range(20)]
        assert results == [1] * 20


async def test_default_manager_reads_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ASYNCDB_URL", f"sqlite+aiosqlite:///{tmp_path / 'env.db'}")
    monkeypatch.setenv("ASYNCDB_POOL_SIZE", "2")
    db = AsyncDatabaseManager()
    assert db.settings.pool_size == 2
    async with db:
        assert (await db.health_check()).healthy


async def test_postgres_session_settings_are_applied(postgres_url: str) -> None:
    db = manager_for(postgres_url, statement_timeout=2.5, application_name="asyncdb-settings")
    async with db, db.session() as session:
        assert (await session.execute(text("SHOW statement_timeout"))).scalar() == "2500ms"
        name = (await session.execute(text("SHOW application_name"))).scalar()
        assert name == "asyncdb-settings"


async def test_statement_timeout_bounds_a_slow_query(postgres_url: str) -> None:
    from asyncdb import QueryError

    db = manager_for(postgres_url, statement_timeout=0.2)
    async with db:
        with pytest.raises(QueryError, match="statement_timeout"):
            async with db.session() as session:
                await session.execute(text("SELECT pg_sleep(5)"))
        report = await db.health_check()
        assert report.healthy


async def test_health_check_does_not_queue_behind_a_writer(db: AsyncDatabaseManager) -> None:
    async with db.session() as session:
        session.add(Item(name="held"))
        await session.flush()  # the write lock (SQLite) / row lock (PostgreSQL) is held
        report = await db.health_check(timeout=1.0)
        if db.settings.is_sqlite_memory:
            # One connection is the whole database: while a writer holds it, a probe
            # waits for it, and the timeout bounds that wait.
            assert not report.healthy
            assert "did not answer within 1 s" in (report.error or "")
        else:
            assert report.healthy, report.error
        await session.rollback()
