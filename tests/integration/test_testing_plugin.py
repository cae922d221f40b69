"""The asyncdb pytest plugin: used here directly, and run in fresh pytest processes."""

from __future__ import annotations

import contextlib
import sqlite3
import textwrap

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    Repository,
    get_audit_logs,
    get_db_manager,
)
from tests.integration.conftest import manager_for
from tests.integration.models import Item

pytest_plugins = ["pytester"]


@pytest.fixture
def asyncdb_url(db: AsyncDatabaseManager, db_url: str) -> str:
    """asyncdb's own tests run the plugin's fixtures over the backend matrix, on the fresh
    tables that ``db`` makes (the PostgreSQL database is shared by the whole run)."""
    return db_url


async def committed_items(url: str) -> int | None:
    """Rows another connection sees, i.e. really committed (None for :memory:)."""
    if url.endswith(":memory:"):
        return None
    if url.startswith("sqlite"):
        # Plain sqlite3: a manager would start with BEGIN IMMEDIATE and wait for the
        # write lock that the test's outer transaction holds.
        path = url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return int(conn.execute("SELECT count(*) FROM t_item").fetchone()[0])
    async with manager_for(url) as other, other.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Item)) or 0)


async def test_manager_fixture_is_connected_with_tables(
    asyncdb_manager: AsyncDatabaseManager,
) -> None:
    assert get_db_manager() is asyncdb_manager
    assert await Repository(Item, asyncdb_manager).count() == 0


@pytest.mark.requires("savepoint")  # the fixtures roll back through a SAVEPOINT
async def test_code_under_test_commits_inside_the_outer_transaction(
    asyncdb_manager: AsyncDatabaseManager,
    asyncdb_transaction: AsyncConnection,
    asyncdb_url: str,
) -> None:
    async with AsyncUnitOfWork(asyncdb_manager, user_id="u1") as uow:
        await uow.get_repository(Item).create(name="committed")
    try:
        async with AsyncUnitOfWork(asyncdb_manager) as uow:
            await uow.get_repository(Item).create(name="rolled back")
            raise RuntimeError("undo this unit only")
    except RuntimeError:
        pass
    await Repository(Item, asyncdb_manager).create(name="also committed")

    items = Repository(Item, asyncdb_manager)
    assert sorted(i.name for i in await items.get_all()) == ["also committed", "committed"]
    assert len(await get_audit_logs(asyncdb_manager)) == 2
    assert asyncdb_transaction.in_transaction()
    # Nothing is visible outside the test's connection: the outer transaction is open.
    assert await committed_items(asyncdb_url) in (0, None)


@pytest.mark.requires("savepoint")  # the fixtures roll back through a SAVEPOINT
async def test_session_fixture(
    asyncdb_session: AsyncSession, asyncdb_manager: AsyncDatabaseManager, asyncdb_url: str
) -> None:
    asyncdb_session.add(Item(name="from the session"))
    await asyncdb_session.commit()
    assert await Repository(Item, asyncdb_manager).count() == 1
    assert await asyncdb_session.scalar(text("SELECT 1")) == 1
    assert await committed_items(asyncdb_url) in (0, None)


@pytest.mark.requires("savepoint")  # the fixtures roll back through a SAVEPOINT
async def test_uow_fixture(
    asyncdb_uow: AsyncUnitOfWork, asyncdb_manager: AsyncDatabaseManager
) -> None:
    async with asyncdb_uow as uow:
        await uow.get_repository(Item).create(name="from the unit")
        async with uow.savepoint():
            await uow.get_repository(Item).create(name="kept")
    assert await Repository(Item, asyncdb_manager).count() == 2


@pytest.mark.requires("savepoint")  # the fixtures roll back through a SAVEPOINT
async def test_bind_sessions_to_restores_the_factories(
    asyncdb_manager: AsyncDatabaseManager,
) -> None:
    conn = await asyncdb_manager.engine.connect()
    try:
        await conn.begin()
        with asyncdb_manager.bind_sessions_to(conn) as bound:
            assert bound is conn
            async with asyncdb_manager.session() as session:
                assert await session.connection() is not None
                assert session.bind is conn
        await conn.rollback()
    finally:
        await conn.close()
    async with asyncdb_manager.session() as session:
        assert session.bind is asyncdb_manager.engine


# -- the plugin as users get it: a fresh pytest process, loaded through the entry point ----

USER_TESTS = """
    import pytest
    from sqlalchemy import String
    from sqlalchemy.orm import Mapped, mapped_column

    from asyncdb import (
        AsyncUnitOfWork, Audited, Base, Repository, get_audit_logs, get_db_manager,
    )


    class Note(Base, Audited):
        __tablename__ = "plugin_note"
        id: Mapped[int] = mapped_column(primary_key=True)
        body: Mapped[str] = mapped_column(String(100))


    async def create_note(body):
        # Application code: opens and commits its own unit on the process-wide manager.
        async with AsyncUnitOfWork(user_id="app") as uow:
            return await uow.get_repository(Note).create(body=body)


    @pytest.mark.asyncio
    @pytest.mark.parametrize("round", [1, 2, 3])
    async def test_rolled_back_after_each_test(asyncdb_transaction, asyncdb_manager, round):
        assert get_db_manager() is asyncdb_manager
        notes = Repository(Note, asyncdb_manager)
        assert await notes.count() == 0
        await create_note(f"round {round}")
        assert await notes.count() == 1
        assert len(await get_audit_logs(asyncdb_manager, user_id="app")) == 1


    @pytest.mark.asyncio
    async def test_session(asyncdb_session):
        asyncdb_session.add(Note(body="s"))
        await asyncdb_session.commit()


    @pytest.mark.asyncio
    async def test_unit(asyncdb_uow, asyncdb_manager):
        async with asyncdb_uow as uow:
            await uow.get_repository(Note).create(body="u")
        assert await Repository(Note, asyncdb_manager).count() == 1
"""


def run_user_tests(
    pytester: pytest.Pytester, *args: str, loop_scope: str | None = None
) -> pytest.RunResult:
    ini = ["[pytest]", "asyncio_mode = strict", "filterwarnings = error"]
    if loop_scope is not None:
        ini += [
            f"asyncio_default_fixture_loop_scope = {loop_scope}",
            f"asyncio_default_test_loop_scope = {loop_scope}",
        ]
    else:
        ini.append("asyncio_default_fixture_loop_scope = function")
    pytester.makeini("\n".join(ini))
    pytester.makepyfile(test_user_app=textwrap.dedent(USER_TESTS))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", *args)


@pytest.mark.slow
def test_plugin_on_default_sqlite_in_strict_mode(pytester: pytest.Pytester) -> None:
    result = run_user_tests(pytester)
    result.assert_outcomes(passed=5)


@pytest.mark.slow
def test_plugin_on_postgres_via_option(pytester: pytest.Pytester, postgres_url: str) -> None:
    result = run_user_tests(pytester, f"--asyncdb-url={postgres_url}")
    result.assert_outcomes(passed=5)


@pytest.mark.slow
def test_plugin_with_module_loop_scope_via_env(
    pytester: pytest.Pytester, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASYNCDB_TEST_URL", postgres_url)
    result = run_user_tests(pytester, loop_scope="module")
    result.assert_outcomes(passed=5)
    result.stdout.no_fnmatch_line("*different loop*")


@pytest.mark.slow
def test_plugin_manager_shared_by_the_session(pytester: pytest.Pytester, postgres_url: str) -> None:
    # The set-up docs/testing.md shows, on asyncpg (whose connections are tied to their
    # loop): one manager and one event loop for the whole session.
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nfilterwarnings = error\n"
        "asyncio_default_fixture_loop_scope = session\n"
        "asyncio_default_test_loop_scope = session"
    )
    pytester.makeconftest(
        """
        import pytest_asyncio
        from asyncdb import AsyncDatabaseManager


        @pytest_asyncio.fixture(scope="session")
        async def asyncdb_manager(asyncdb_url, asyncdb_metadata):
            async with AsyncDatabaseManager(asyncdb_url) as db:
                async with db.engine.begin() as conn:
                    for metadata in asyncdb_metadata:
                        await conn.run_sync(metadata.create_all)
                yield db
        """
    )
    test = """
        import pytest
        from sqlalchemy import text


        @pytest.mark.parametrize("n", range(3))
        async def test_shared(asyncdb_manager, asyncdb_session, n, pytestconfig):
            managers = getattr(pytestconfig, "managers", set())
            managers.add(id(asyncdb_manager))
            pytestconfig.managers = managers
            assert len(managers) == 1
            assert await asyncdb_session.scalar(text("SELECT 1")) == 1
        """
    pytester.makepyfile(test_one=test, test_two=test)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", f"--asyncdb-url={postgres_url}"
    )
    result.assert_outcomes(passed=6)


@pytest.mark.slow
def test_plugin_fails_a_test_that_leaks_a_connection(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function")
    pytester.makepyfile(
        test_leak="""
        leaked = []

        async def test_leaks(asyncdb_manager):
            session = asyncdb_manager.session()
            await session.connection()
            leaked.append(session)  # never closed
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-W", "ignore")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*left 1 database connection(s) checked out*"])


def test_plugin_is_registered_through_the_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("asyncdb")
    assert plugin is not None
    assert plugin.__name__ == "asyncdb.testing"
