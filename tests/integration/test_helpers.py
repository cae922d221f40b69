"""The seed's module-level helpers: the process-wide manager, get_session, run_tx, init."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select, text

import asyncdb
from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    ManagerState,
    StateError,
    get_conn,
    get_db_manager,
    get_session,
    init_database,
    run_tx,
    set_db_manager,
)
from tests.integration.models import Item


@pytest.fixture
async def no_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[str]:
    """No process-wide manager, ``ASYNCDB_URL`` pointing at a fresh SQLite file.

    Restores the previous manager afterwards and disposes any the test created.
    """
    url = f"sqlite+aiosqlite:///{tmp_path / 'default.db'}"
    monkeypatch.setenv("ASYNCDB_URL", url)
    monkeypatch.setenv("ASYNCDB_CONNECT_RETRIES", "1")
    previous = set_db_manager(None)
    try:
        yield url
    finally:
        created = set_db_manager(previous)
        if created is not None and created is not previous:
            await created.dispose()


@pytest.fixture
def as_default(db: AsyncDatabaseManager) -> Iterator[AsyncDatabaseManager]:
    """Install the matrix manager as the process-wide one for the test."""
    previous = set_db_manager(db)
    yield db
    set_db_manager(previous)


async def test_get_db_manager_is_built_from_the_environment_lazily(no_default: str) -> None:
    db = get_db_manager()
    assert db.settings.url == no_default
    assert db.state is ManagerState.NEW  # nothing connects until it is used
    assert get_db_manager() is db
    await db.connect()
    await db.dispose()
    fresh = get_db_manager()  # a disposed default is replaced
    assert fresh is not db
    assert fresh.state is ManagerState.NEW


async def test_set_db_manager_replaces_and_returns_the_previous(
    no_default: str, tmp_path: Path
) -> None:
    mine = AsyncDatabaseManager(f"sqlite+aiosqlite:///{tmp_path / 'mine.db'}")
    assert set_db_manager(mine) is None
    assert get_db_manager() is mine
    assert set_db_manager(None) is mine
    assert get_db_manager() is not mine


async def test_get_session_connects_the_default_on_first_use(no_default: str) -> None:
    async with get_session() as session:
        assert await session.scalar(text("SELECT 1")) == 1
    db = get_db_manager()
    assert db.state is ManagerState.CONNECTED
    assert db.pool_status()["checked_out"] == 0


async def test_concurrent_first_uses_connect_once(no_default: str) -> None:
    async def one() -> int:
        async with get_conn() as session:
            return int(await session.scalar(text("SELECT 1")))

    assert await asyncio.gather(*(one() for _ in range(10))) == [1] * 10
    assert get_db_manager().state is ManagerState.CONNECTED


@pytest.mark.usefixtures("as_default")
async def test_get_session_and_get_conn(db: AsyncDatabaseManager) -> None:
    assert get_conn is get_session
    async with get_session() as session:
        session.add(Item(name="via-get-session"))
        await session.commit()
    async with get_conn(read_only=True) as session:
        rows = (await session.scalars(select(Item.name))).all()
    assert rows == ["via-get-session"]
    assert db.pool_status()["checked_out"] == 0


@pytest.mark.usefixtures("as_default")
async def test_get_session_does_not_commit_for_you(db: AsyncDatabaseManager) -> None:
    async with get_session() as session:
        session.add(Item(name="uncommitted"))
        await session.flush()
    async with get_session() as session:
        assert (await session.scalars(select(Item))).all() == []


@pytest.mark.usefixtures("as_default")
async def test_run_tx_and_units_default_to_the_process_wide_manager(
    db: AsyncDatabaseManager,
) -> None:
    async def create(uow: AsyncUnitOfWork, name: str) -> AsyncDatabaseManager:
        await uow.get_repository(Item).create(name=name)
        return uow.db

    assert await run_tx(create, "via-run-tx") is db
    async with AsyncUnitOfWork() as uow:
        assert uow.db is db
        await uow.get_repository(Item).create(name="via-unit")
    async with db.session() as session:
        assert sorted((await session.scalars(select(Item.name))).all()) == [
            "via-run-tx",
            "via-unit",
        ]


async def test_init_database_without_migrations_connects(no_default: str) -> None:
    db = await init_database(auto_migrate=False)
    assert db is get_db_manager()
    assert db.state is ManagerState.CONNECTED
    assert await init_database(auto_migrate=False) is db  # a second call is harmless


async def test_init_database_with_a_given_manager(db_url: str) -> None:
    from tests.integration.conftest import manager_for

    db = manager_for(db_url)
    try:
        assert await init_database(db, auto_migrate=False) is db
        assert db.state is ManagerState.CONNECTED
    finally:
        await db.dispose()
    with pytest.raises(StateError, match="disposed"):
        await run_tx(lambda uow: asyncio.sleep(0), db=db)


async def test_init_database_runs_the_migrations(no_default: str) -> None:
    db = await init_database()
    assert db.state is ManagerState.CONNECTED
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda sync: set(sa_inspect(sync).get_table_names()))
    assert asyncdb.AuditLog.__tablename__ in tables
    await init_database()  # already at head: nothing to do, no error
