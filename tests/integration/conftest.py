"""The backend matrix: every integration test runs on sqlite-file, sqlite-memory, postgres,
mariadb and duckdb.

A test that needs a feature some backend lacks says so with ``@pytest.mark.requires(...)``;
the ``backend`` fixture skips it there with the reason the capability table
(:mod:`asyncdb._capabilities`) gives, and nowhere else. ``ASYNCDB_TEST_BACKENDS``
(comma-separated) narrows the matrix: CI runs MariaDB and DuckDB on its default Python
only (``.ci/run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import duckdb
import pytest
from sqlalchemy import Table, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from asyncdb import AsyncDatabaseManager, Base
from asyncdb._capabilities import reason as capability_reason
from asyncdb._capabilities import supports
from asyncdb._schema import all_metadata
from tests.conftest import pristine_database
from tests.integration import models  # registers the test tables

ALL_BACKENDS = ["sqlite-file", "sqlite-memory", "postgres", "mariadb", "duckdb"]
_CHOSEN = [name.strip() for name in os.environ.get("ASYNCDB_TEST_BACKENDS", "").split(",")]
BACKENDS = [name for name in ALL_BACKENDS if name in _CHOSEN] if any(_CHOSEN) else ALL_BACKENDS

#: The matrix's entries as ``DatabaseSettings.backend`` names them (the capability table's).
BACKEND_KIND = {
    "sqlite-file": "sqlite",
    "sqlite-memory": "sqlite",
    "postgres": "postgresql",
    "mariadb": "mysql",
    "duckdb": "duckdb",
}


def skip_unless_supported(request: pytest.FixtureRequest, name: str) -> None:
    """Skip on ``name`` when the test ``requires`` a feature the table marks ✗ there."""
    kind = BACKEND_KIND[name]
    for marker in request.node.iter_markers("requires"):
        for feature in marker.args:
            if not supports(kind, feature):
                pytest.skip(f"{name} lacks {feature}: {capability_reason(kind, feature)}")


#: Fixtures that reach one backend directly, outside the ``backend`` parameter.
_DIRECT_FIXTURES = {"mysql_url": "mariadb", "maria": "mariadb", "duck": "duckdb"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests that use a backend ``ASYNCDB_TEST_BACKENDS`` left out."""
    keep, drop = [], []
    for item in items:
        names = getattr(item, "fixturenames", ())
        left_out = any(
            fixture in names and backend not in BACKENDS
            for fixture, backend in _DIRECT_FIXTURES.items()
        )
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("empty_url") if callspec is not None else None
        left_out = left_out or (kind in ALL_BACKENDS and kind not in BACKENDS)
        (drop if left_out else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The matrix entry; skipped only where the capability table marks a required ✗."""
    name = str(request.param)
    skip_unless_supported(request, name)
    return name


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite-file":  # tmp_path only here: making one costs about 1 ms
        return f"sqlite+aiosqlite:///{request.getfixturevalue('tmp_path') / 'test.db'}"
    if backend == "sqlite-memory":
        return "sqlite+aiosqlite:///:memory:"
    if backend == "duckdb":
        return str(request.getfixturevalue("duckdb_url"))
    if backend == "mariadb":
        return str(request.getfixturevalue("mysql_url"))
    return str(request.getfixturevalue("postgres_url"))


def manager_for(url: str, **overrides: Any) -> AsyncDatabaseManager:
    """A manager with test-friendly bounds: few retries; pool and SQLite lock waits that
    outlast a loaded CI machine's queue of 1,000 concurrent writers, yet still end a hang."""
    options: dict[str, Any] = {"connect_retries": 1, "pool_timeout": 30.0, "busy_timeout": 30.0}
    if url.startswith(("duckdb", "mysql")):
        # DuckDB commits one transaction at a time, each writing its log, and MariaDB
        # flushes its log at every commit: 1,000 writers queued on 15 connections wait
        # several times longer than on the other backends (a 30 s wait ran out on MariaDB
        # with two suites sharing the machine).
        options["pool_timeout"] = 120.0
    options.update(overrides)
    return AsyncDatabaseManager(url, **options)


def _tables() -> list[Table]:
    return [table for metadata in all_metadata() for table in metadata.sorted_tables]


async def reset_schema(db: AsyncDatabaseManager) -> None:
    """Drop and create every table of ``Base.metadata`` and the toolkit's metadata."""
    async with db.engine.begin() as conn:
        for metadata in all_metadata():
            await conn.run_sync(metadata.drop_all)
        for metadata in all_metadata():
            await conn.run_sync(metadata.create_all)


#: PostgreSQL: an event trigger counts every DDL command run in the test database (in a
#: schema of its own, which the sequences reset and the schema checks never see). While
#: the count is what it was right after :func:`reset_schema` built the tables, the
#: tables are as built; reading it costs nothing, where a digest of the catalogue cost
#: the server 10-20 ms per test.
_COUNT_DDL = """
CREATE SCHEMA IF NOT EXISTS asyncdb_test;
CREATE SEQUENCE IF NOT EXISTS asyncdb_test.ddl_count;
CREATE OR REPLACE FUNCTION asyncdb_test.count_ddl() RETURNS event_trigger
    LANGUAGE plpgsql AS $$ BEGIN PERFORM nextval('asyncdb_test.ddl_count'); END $$;
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'asyncdb_test_count_ddl') THEN
        CREATE EVENT TRIGGER asyncdb_test_count_ddl ON ddl_command_end
            EXECUTE FUNCTION asyncdb_test.count_ddl();
    END IF;
END $$;
"""
_DDL_COUNT = text(
    "SELECT coalesce(pg_sequence_last_value(to_regclass('asyncdb_test.ddl_count')), -1) "
    "* (SELECT count(*) FROM pg_event_trigger WHERE evtname = 'asyncdb_test_count_ddl')"
)

#: Per database URL: the DDL count right after :func:`reset_schema` built the tables.
_built_schema: dict[str, int] = {}


async def empty_tables(db: AsyncDatabaseManager) -> None:
    """Every table of the matrix, present, as built, and empty, as cheaply as possible.

    A SQLite or DuckDB database gets ``drop_all``/``create_all`` (the ``db`` fixture copies
    a template instead, see :func:`schema_template`, and empties the matrix's DuckDB file
    in process, see :func:`duckdb_url`). MariaDB's database lives for the
    whole run: its tables are emptied by ``TRUNCATE`` while they are as the models define
    them. PostgreSQL's lives for the whole run too, and keeps its tables while no DDL ran
    since ``reset_schema`` built them (a test that added a constraint or trigger, or
    dropped or changed a table, gets them rebuilt: ``_COUNT_DDL``) and has them emptied
    in one round trip: ``DELETE`` with triggers off (the
    audit log's append-only guard, foreign keys) and every sequence set back to its
    start. On tables of a few rows that is about 40 times cheaper than ``TRUNCATE``,
    which makes new files for every table it empties.
    """
    if db.backend == "mysql":
        await _empty_mysql_tables(db, _tables())
        return
    if db.backend != "postgresql":
        await reset_schema(db)
        return
    key = db.settings.url
    async with db.engine.begin() as conn:
        if await conn.scalar(_DDL_COUNT) == _built_schema.get(key):
            deletes = "; ".join(f'DELETE FROM "{table.name}"' for table in reversed(_tables()))
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(  # type: ignore[union-attr]
                "SET LOCAL session_replication_role = replica; "
                f"{deletes}; "
                "SELECT setval(format('%I.%I', schemaname, sequencename), start_value, false) "
                "FROM pg_sequences WHERE schemaname = current_schema()"
            )
            return
    await reset_schema(db)
    async with db.engine.begin() as conn:
        raw = await conn.get_raw_connection()
        await raw.driver_connection.execute(_COUNT_DDL)  # type: ignore[union-attr]
        _built_schema[key] = int(await conn.scalar(_DDL_COUNT) or 0)


async def _empty_mysql_tables(db: AsyncDatabaseManager, tables: list[Table]) -> None:
    """MariaDB's database lives for the whole run too: while every table is there as the
    models define it, ``TRUNCATE`` (which also resets AUTO_INCREMENT) the tables the last
    test left rows in or moved the AUTO_INCREMENT of; about 2 ms per table, so a test
    that wrote to two tables pays for two, not for all of them."""
    names = [table.name for table in tables]
    marks = ", ".join(f":n{i}" for i in range(len(names)))
    params = {f"n{i}": name for i, name in enumerate(names)}
    where = f"table_schema = DATABASE() AND table_name IN ({marks})"
    async with db.engine.connect() as conn:
        if not getattr(conn.dialect, "is_mariadb", False):
            # MySQL 8 caches information_schema figures (AUTO_INCREMENT among them).
            await conn.execute(text("SET SESSION information_schema_stats_expiry = 0"))
        found, columns = (
            await conn.execute(
                text(
                    f"SELECT (SELECT count(*) FROM information_schema.tables WHERE {where}), "
                    f"(SELECT count(*) FROM information_schema.columns WHERE {where})"
                ),
                params,
            )
        ).one()
        if found == len(names) and columns == sum(len(table.columns) for table in tables):
            await _truncate_used(conn, names, marks, params)
            return
    await reset_schema(db)  # on a connection of its own: the pool may hold only one


async def _truncate_used(
    conn: AsyncConnection, names: list[str], marks: str, params: dict[str, str]
) -> None:
    """TRUNCATE the tables among ``names`` that hold rows or moved their AUTO_INCREMENT
    (``marks`` and ``params``: the names as bound parameters of an IN list)."""
    rows = " UNION ALL ".join(
        f"SELECT '{name}' FROM DUAL WHERE EXISTS (SELECT 1 FROM `{name}`)" for name in names
    )
    advanced = (
        "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() "
        f"AND table_name IN ({marks}) AND auto_increment > 1"
    )
    used = set((await conn.scalars(text(rows))).all())
    used |= set((await conn.scalars(text(advanced), params)).all())
    if used:
        await conn.execute(text("SET FOREIGN_KEY_CHECKS = 0"))
        for name in names:
            if name in used:
                await conn.execute(text(f"TRUNCATE TABLE `{name}`"))
        await conn.execute(text("SET FOREIGN_KEY_CHECKS = 1"))
    await conn.commit()


#: Per process: a database file of each embedded kind holding every table as
#: :func:`reset_schema` builds them (``create_all`` costs 25-70 ms per test; a copy ~1 ms).
_templates: dict[str, Path] = {}


async def schema_template(kind: str, directory: Path) -> Path:
    """The template file for ``kind`` (``sqlite`` or ``duckdb``), built on first use."""
    template = _templates.get(kind)
    if template is None:
        template = directory / f"schema-{kind}.db"
        scheme = "sqlite+aiosqlite" if kind == "sqlite" else "duckdb+aioduckdb"
        manager = manager_for(f"{scheme}:///{template}")
        await manager.connect()
        try:
            await reset_schema(manager)
        finally:
            await manager.dispose()
        if kind == "sqlite":
            with contextlib.closing(sqlite3.connect(template)) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _templates[kind] = template
    return template


async def copy_schema_template(url: str, directory: Path) -> bool:
    """Give a new SQLite or DuckDB file its tables by copying the template; False (and
    nothing done) for an in-memory database, a server, or a file that exists already."""
    scheme, _, path = url.partition(":///")
    kind = {"sqlite+aiosqlite": "sqlite", "duckdb+aioduckdb": "duckdb"}.get(scheme)
    if kind is None or path in ("", ":memory:") or Path(path).exists():
        return False
    template = await schema_template(kind, directory)
    shutil.copyfile(template, path)
    log = Path(f"{template}.wal")  # DuckDB checkpoints on close; a log left is copied too
    if log.exists():
        shutil.copyfile(log, f"{path}.wal")
    return True


async def restore_schema_template(db: AsyncDatabaseManager, directory: Path) -> None:
    """An in-memory SQLite database gets its tables from the template by SQLite's backup
    (which replaces the whole database, on the pool's only connection)."""
    template = await schema_template("sqlite", directory)
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        async with aiosqlite.connect(template) as source:
            await source.backup(raw.driver_connection)


#: DuckDB: the catalogue as built, without the sequences' current values (``sql`` of
#: ``duckdb_sequences()`` carries them): a test that ran DDL changes its digest.
_DUCKDB_CATALOGUE = (
    "SELECT md5(string_agg(sql, ';' ORDER BY sql)) FROM ("
    "SELECT sql FROM duckdb_tables() UNION ALL SELECT sql FROM duckdb_indexes() "
    "UNION ALL SELECT sql FROM duckdb_views() WHERE NOT internal "
    "UNION ALL SELECT sequence_name FROM duckdb_sequences())"
)

#: Per DuckDB URL: the connection that keeps its database open for the whole run (see
#: :func:`duckdb_url`), and the catalogue digest right after its tables were built.
_duckdb_keepers: dict[str, duckdb.DuckDBPyConnection] = {}
_duckdb_built: dict[str, str] = {}


def _empty_duckdb_tables(keeper: duckdb.DuckDBPyConnection, url: str) -> bool:
    """Empty the tables of the kept DuckDB database and restart its sequences, through
    the connection that keeps it open (in this process, no round trip); False, with
    nothing done, when DDL changed the catalogue since the tables were built.

    One DELETE per table that holds rows, children first, each committing on its own:
    DuckDB refuses to delete a parent row in the transaction that deleted the rows
    referring to it."""
    if keeper.execute(_DUCKDB_CATALOGUE).fetchone() != (_duckdb_built.get(url),):
        return False
    names = [table.name for table in reversed(_tables())]
    used = " UNION ALL ".join(
        f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM \"{name}\")" for name in names
    )
    holding = {row[0] for row in keeper.execute(used).fetchall()}
    for name in names:
        if name in holding:
            keeper.execute(f'DELETE FROM "{name}"')
    sequences = keeper.execute(
        "SELECT sequence_name, start_value FROM duckdb_sequences() WHERE last_value IS NOT NULL"
    ).fetchall()
    if sequences:
        restart = ", ".join(f"setval('{name}', {start}, false)" for name, start in sequences)
        keeper.execute(f"SELECT {restart}")
    return True


def _record_duckdb_schema(url: str) -> None:
    """Note the kept database's catalogue as :func:`reset_schema` built it."""
    row = _duckdb_keepers[url].execute(_DUCKDB_CATALOGUE).fetchone()
    _duckdb_built[url] = str(row[0]) if row else ""


@pytest.fixture(scope="session")
def duckdb_url(tmp_path_factory: pytest.TempPathFactory, schema_templates: Path) -> Iterator[str]:
    """The DuckDB file the matrix's DuckDB tests of this process share, kept open.

    Opening a DuckDB database costs about 12 ms of CPU and closing it a checkpoint, for
    each test. A connection held for the whole run keeps the database in DuckDB's
    instance cache, so a test's manager connects without opening the database again;
    :func:`connect_fresh` empties its tables between tests (about 4 ms of CPU), and
    rebuilds them when a test changed the catalogue. A test that must open the file from
    another process (which DuckDB's file lock refuses while this one holds it) takes a
    file of its own.
    """
    path = tmp_path_factory.mktemp("duckdb") / "matrix.duckdb"
    url = f"duckdb+aioduckdb:///{path}"
    asyncio.run(copy_schema_template(url, schema_templates))
    # The configuration asyncdb's dialect opens it with: DuckDB refuses a second
    # connection to one file with another.
    _duckdb_keepers[url] = duckdb.connect(str(path), config={"custom_user_agent": "asyncdb"})
    _record_duckdb_schema(url)
    try:
        yield url
    finally:
        _duckdb_keepers.pop(url).close()


@pytest.fixture(params=["mariadb", "duckdb"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new, empty MariaDB database or DuckDB file (for the new backends' own tests)."""
    with pristine_database(str(request.param), tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def schema_templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this process keeps its schema templates (see :func:`schema_template`)."""
    return tmp_path_factory.mktemp("schema-templates")


async def connect_fresh(url: str, templates: Path, **overrides: Any) -> AsyncDatabaseManager:
    """``manager_for(url, **overrides)``, connected, on every table of the matrix, empty:
    a template copied for a new SQLite or DuckDB database, the matrix's kept DuckDB file
    emptied in process (:func:`duckdb_url`), :func:`empty_tables` else."""
    copied = await copy_schema_template(url, templates)
    keeper = _duckdb_keepers.get(url)
    emptied = keeper is not None and _empty_duckdb_tables(keeper, url)
    manager = manager_for(url, **overrides)
    await manager.connect()
    try:
        if manager.settings.is_memory and manager.backend == "sqlite":
            await restore_schema_template(manager, templates)
        elif keeper is not None and not emptied:
            await reset_schema(manager)
            _record_duckdb_schema(url)
        elif not copied and not emptied:
            await empty_tables(manager)
    except BaseException:
        await manager.dispose()
        raise
    return manager


@pytest.fixture
async def db(db_url: str, schema_templates: Path) -> AsyncIterator[AsyncDatabaseManager]:
    """A connected manager on fresh tables; fails the test if a connection is left out."""
    manager = await connect_fresh(db_url, schema_templates)
    try:
        yield manager
        checked_out = manager.pool_status().get("checked_out", 0)
        assert checked_out == 0, f"{checked_out} connection(s) left checked out after the test"
    finally:
        await manager.dispose()


async def names(db: AsyncDatabaseManager) -> list[str]:
    """The names of every ``Item`` row, sorted (read-only: no write lock on SQLite)."""
    async with db.session(read_only=True) as session:
        return sorted((await session.scalars(select(models.Item.name))).all())


async def wait_until(
    predicate: Any, what: str = "the condition holds", timeout: float = 10.0
) -> None:
    """Poll ``predicate`` (sync or async) until true; fail after ``timeout`` seconds.

    For waiting on another task's progress; never a substitute for synchronisation that
    the code under test offers.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def is_postgres(backend: str) -> bool:
    return backend == "postgres"


__all__ = [
    "Base",
    "connect_fresh",
    "empty_tables",
    "manager_for",
    "names",
    "reset_schema",
    "wait_until",
]


@pytest.fixture
def plain_built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Instances that standalone reads built from Core rows (asyncdb._plain_load); the
    ORM path leaves the list empty."""
    from asyncdb._plain_load import PlainLoader

    built: list[Any] = []
    original = PlainLoader.instances

    def counted(self: PlainLoader, rows: Any) -> list[Any]:
        found = original(self, rows)
        built.extend(found)
        return found

    monkeypatch.setattr(PlainLoader, "instances", counted)
    return built


@pytest.fixture
async def blog(db: AsyncDatabaseManager) -> dict[str, Any]:
    """The small blog of ``test_loading.seed_blog`` in ``db``: its ids by name."""
    from tests.integration.test_loading import seed_blog

    return await seed_blog(db)
