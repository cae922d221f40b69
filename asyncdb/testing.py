"""pytest plugin for applications that use asyncdb (registered as ``asyncdb``).

Installing asyncdb registers it through the ``pytest11`` entry point; the fixtures need
pytest-asyncio. Every fixture is named ``asyncdb_*``:

``asyncdb_url`` (session)
    The test database: ``--asyncdb-url``, else ``ASYNCDB_TEST_URL``, else a SQLite file
    in pytest's temporary directory.
``asyncdb_metadata`` (session)
    The ``MetaData`` objects whose tables ``asyncdb_manager`` creates (``Base.metadata``
    and the toolkit's audit table). Override it to return ``[]`` when migrations build
    the schema.
``asyncdb_manager``
    A connected :class:`~asyncdb.AsyncDatabaseManager` with the tables created, installed
    as the process-wide manager (``get_db_manager()``) for the test. The test fails if it
    leaves a connection checked out. Work done through it is committed for real.
``asyncdb_transaction``
    Runs the test inside one outer transaction that is rolled back afterwards: every
    session of ``asyncdb_manager`` joins it through a SAVEPOINT, so code under test may
    commit (SAVEPOINT mode). Yields the ``AsyncConnection``.
``asyncdb_session``
    An ``AsyncSession`` inside that transaction.
``asyncdb_uow``
    An :class:`~asyncdb.AsyncUnitOfWork` inside that transaction, not yet entered: write
    ``async with asyncdb_uow as uow:`` in the test (a unit belongs to the task that opens
    it, and pytest-asyncio runs fixtures and the test body in different tasks).

The async fixtures are function-scoped and run on the event loop of the test that uses
them, so asyncpg connections never meet another loop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

    from ._manager import AsyncDatabaseManager
    from ._uow import AsyncUnitOfWork

__all__ = [
    "URL_ENV",
    "asyncdb_manager",
    "asyncdb_metadata",
    "asyncdb_session",
    "asyncdb_transaction",
    "asyncdb_uow",
    "asyncdb_url",
]

#: Environment variable naming the test database when ``--asyncdb-url`` is not given.
URL_ENV = "ASYNCDB_TEST_URL"


def _async_fixture(function: Callable[..., Any]) -> Any:
    """``pytest_asyncio.fixture`` (strict and auto mode alike), or a fixture that says why not."""
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - pytest-asyncio is in asyncdb's dev extra

        def missing() -> None:
            pytest.fail("asyncdb's fixtures need pytest-asyncio: pip install pytest-asyncio")

        missing.__name__ = function.__name__
        missing.__doc__ = function.__doc__
        return pytest.fixture(name=function.__name__)(missing)
    return pytest_asyncio.fixture(function)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("asyncdb")
    group.addoption(
        "--asyncdb-url",
        default=None,
        help=f"Database URL for asyncdb's test fixtures (default: ${URL_ENV}, else SQLite).",
    )


@pytest.fixture(scope="session")
def asyncdb_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The test database URL: ``--asyncdb-url``, ``$ASYNCDB_TEST_URL``, or a temp SQLite file."""
    url = request.config.getoption("--asyncdb-url") or os.environ.get(URL_ENV)
    if url:
        return str(url)
    path: Path = tmp_path_factory.mktemp("asyncdb") / "test.sqlite3"
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def asyncdb_metadata() -> list[MetaData]:
    """The metadata whose tables ``asyncdb_manager`` creates (override with ``[]`` to skip)."""
    from ._schema import all_metadata

    return all_metadata()


@_async_fixture
async def asyncdb_manager(
    asyncdb_url: str, asyncdb_metadata: list[MetaData]
) -> AsyncIterator[AsyncDatabaseManager]:
    """A connected manager for ``asyncdb_url`` with the tables of ``asyncdb_metadata``."""
    from ._helpers import set_db_manager
    from ._manager import AsyncDatabaseManager

    manager = AsyncDatabaseManager(asyncdb_url)
    await manager.connect()
    previous = set_db_manager(manager)
    try:
        if asyncdb_metadata:
            async with manager.engine.begin() as conn:
                for metadata in asyncdb_metadata:
                    await conn.run_sync(metadata.create_all)
        yield manager
        checked_out = manager.pool_status().get("checked_out", 0)
        if checked_out:
            pytest.fail(
                f"The test left {checked_out} database connection(s) checked out. Close every "
                "session (use `async with db.session()`) and unit of work it opens."
            )
    finally:
        set_db_manager(previous)
        await manager.dispose()


@_async_fixture
async def asyncdb_transaction(
    asyncdb_manager: AsyncDatabaseManager,
) -> AsyncIterator[AsyncConnection]:
    """One outer transaction around the test, rolled back after it (SAVEPOINT mode)."""
    conn = await asyncdb_manager.engine.connect()
    try:
        await conn.begin()
        with asyncdb_manager.bind_sessions_to(conn):
            yield conn
    finally:
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()


@_async_fixture
async def asyncdb_session(
    asyncdb_manager: AsyncDatabaseManager, asyncdb_transaction: AsyncConnection
) -> AsyncIterator[AsyncSession]:
    """A session in the test's outer transaction; its commits release a SAVEPOINT."""
    async with asyncdb_manager.session() as session:
        yield session


@pytest.fixture
def asyncdb_uow(
    asyncdb_manager: AsyncDatabaseManager, asyncdb_transaction: AsyncConnection
) -> AsyncUnitOfWork:
    """A unit of work in the test's outer transaction; enter it in the test."""
    from ._uow import AsyncUnitOfWork

    return AsyncUnitOfWork(asyncdb_manager)
