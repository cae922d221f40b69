"""The toolkit's Alembic migrations on a pristine SQLite file and PostgreSQL database.

Every test gets a database of its own (never the shared one, whose tables other tests
create from metadata): a new SQLite file, or a PostgreSQL database created and dropped here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

import asyncdb._migrate as migrate_module
from asyncdb import (
    AsyncDatabaseManager,
    MigrationError,
    downgrade,
    migrate,
    migration_status,
    migrations_location,
)
from asyncdb._migrate import ADVISORY_LOCK_KEY, VERSION_TABLE
from asyncdb.cli import main
from tests.conftest import _dsn, pristine_database

REPO = Path(__file__).resolve().parents[2]
HEAD = "asyncdb_0002"
ALL = ("asyncdb_0001", HEAD)
AUDIT_INDEXES = {
    "ix_asyncdb_audit_log_action",
    "ix_asyncdb_audit_log_correlation_id",
    "ix_asyncdb_audit_log_entity",
    "ix_asyncdb_audit_log_occurred_at",
    "ix_asyncdb_audit_log_user_id",
    "ux_asyncdb_audit_log_chain",
}
PRISTINE = ["sqlite-file", "postgres"]


@pytest.fixture
def fresh_pg_url(tmp_path: Path) -> Iterator[str]:
    with pristine_database("postgres", tmp_path) as url:
        yield url


@pytest.fixture
def fresh_sqlite_url(tmp_path: Path) -> Iterator[str]:
    with pristine_database("sqlite-file", tmp_path) as url:
        yield url


async def schema_of(url: str) -> tuple[set[str], set[str], list[str]]:
    """(tables, audit-log indexes, version rows) as the database reports them."""
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:

            def read(sync_conn: object) -> tuple[set[str], set[str]]:
                inspector = inspect(sync_conn)
                tables = set(inspector.get_table_names())
                indexes = (
                    {str(ix["name"]) for ix in inspector.get_indexes("asyncdb_audit_log")}
                    if "asyncdb_audit_log" in tables
                    else set()
                )
                return tables, indexes

            tables, indexes = await conn.run_sync(read)
            versions: list[str] = []
            if VERSION_TABLE in tables:
                rows = await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
                versions = sorted(str(row[0]) for row in rows)
    finally:
        await engine.dispose()
    return tables, indexes, versions


async def execute(url: str, *statements: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


# -- round trip ------------------------------------------------------------------------


async def test_upgrade_downgrade_upgrade_round_trip(fresh_url: str) -> None:
    status = await migration_status(fresh_url)
    assert (status.current, status.heads, status.pending) == ((), (HEAD,), ALL)
    assert not status.up_to_date

    result = await migrate(fresh_url)
    assert (result.before, result.after, result.applied) == ((), (HEAD,), ALL)
    assert result.changed
    tables, indexes, versions = await schema_of(fresh_url)
    assert {"asyncdb_audit_log", VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # the application's version table stays free
    assert indexes == AUDIT_INDEXES
    assert versions == [HEAD]

    again = await migrate(fresh_url)
    assert (again.before, again.after, again.applied) == ((HEAD,), (HEAD,), ())
    assert not again.changed

    down = await downgrade(fresh_url, "base")
    assert (down.before, down.after, down.applied) == ((HEAD,), (), ALL[::-1])
    tables, _, versions = await schema_of(fresh_url)
    assert "asyncdb_audit_log" not in tables
    assert versions == []

    back = await migrate(fresh_url, revision="asyncdb@head")
    assert back.after == (HEAD,)
    status = await migration_status(fresh_url)
    assert status.up_to_date
    assert status.to_dict() == {
        "url": status.url,
        "current": [HEAD],
        "heads": [HEAD],
        "pending": [],
        "up_to_date": True,
    }


async def test_migrate_uses_the_managers_engine(tmp_path: Path) -> None:
    # An in-memory database exists only on the manager's one connection: the migration
    # must run there, not on an engine of its own.
    async with AsyncDatabaseManager("sqlite+aiosqlite:///:memory:") as db:
        result = await migrate(db)
        assert result.applied == ALL
        assert (await migration_status(db)).up_to_date
        async with db.engine.connect() as conn:
            count = await conn.scalar(text("SELECT count(*) FROM asyncdb_audit_log"))
        assert count == 0
        assert db.pool_status().get("checked_out", 0) == 0


async def test_migrate_before_connect_says_to_connect() -> None:
    from asyncdb import StateError

    db = AsyncDatabaseManager("sqlite+aiosqlite:///:memory:")
    with pytest.raises(StateError, match="connect"):
        await migrate(db)


# -- alembic from the repository root ------------------------------------------------------


def alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ASYNCDB_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_alembic_command_line_from_the_repository_root(fresh_url: str) -> None:
    """`alembic upgrade head`, `check`, `downgrade base` work from the root (pyproject)."""
    for args in (["upgrade", "head"], ["check"], ["downgrade", "base"], ["upgrade", "head"]):
        done = alembic(fresh_url, *args)
        assert done.returncode == 0, f"alembic {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        if args == ["check"]:
            # No difference between the models and the migrations: a model changed
            # without a migration fails here.
            assert "No new upgrade operations detected" in done.stdout
        elif args == ["downgrade", "base"]:
            assert "asyncdb_audit_log" not in asyncio.run(schema_of(fresh_url))[0]
    tables, indexes, versions = asyncio.run(schema_of(fresh_url))
    assert "asyncdb_audit_log" in tables
    assert indexes == AUDIT_INDEXES
    assert versions == [HEAD]


@pytest.mark.slow
def test_alembic_check_reports_a_schema_that_differs(fresh_sqlite_url: str) -> None:
    asyncio.run(migrate(fresh_sqlite_url))
    asyncio.run(execute(fresh_sqlite_url, "DROP INDEX ix_asyncdb_audit_log_action"))
    done = alembic(fresh_sqlite_url, "check")
    assert done.returncode != 0
    assert "New upgrade operations detected" in done.stdout + done.stderr
    assert "ix_asyncdb_audit_log_action" in done.stdout + done.stderr


@pytest.mark.slow
def test_alembic_autogenerate_ignores_the_applications_tables(fresh_sqlite_url: str) -> None:
    asyncio.run(migrate(fresh_sqlite_url))
    asyncio.run(
        execute(
            fresh_sqlite_url,
            "CREATE TABLE app_orders (id INTEGER PRIMARY KEY)",
            "CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)",
        )
    )
    done = alembic(fresh_sqlite_url, "check")
    assert done.returncode == 0, done.stdout + done.stderr


# -- failures --------------------------------------------------------------------------

REVISION_TEMPLATE = '''\
"""A test revision."""

import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade():
{upgrade}


def downgrade():
{downgrade}
'''

AddRevision = Callable[..., Path]


@pytest.fixture
def add_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AddRevision:
    """Write extra revisions into a copy of the toolkit's migrations, used from now on."""
    location = tmp_path / "migrations"
    shutil.copytree(migrations_location(), location, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrate_module, "migrations_location", lambda: location)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def add(revision: str, down_revision: str, upgrade: str, downgrade: str = "pass") -> Path:
        path = location / "versions" / f"{revision}_{uuid.uuid4().hex[:6]}.py"
        path.write_text(
            REVISION_TEMPLATE.format(
                revision=revision,
                down_revision=down_revision,
                upgrade=textwrap.indent(textwrap.dedent(upgrade).strip(), "    "),
                downgrade=textwrap.indent(textwrap.dedent(downgrade).strip(), "    "),
            )
        )
        return path

    return add


CREATE_TWO = 'op.create_table("asyncdb_test_two", sa.Column("id", sa.Integer, primary_key=True))'
CREATE_THREE = (
    'op.create_table("asyncdb_test_three", sa.Column("id", sa.Integer, primary_key=True))'
)


async def test_failed_upgrade_stops_at_the_last_good_revision(
    fresh_url: str, add_revision: AddRevision
) -> None:
    add_revision("asyncdb_0003", HEAD, CREATE_TWO, 'op.drop_table("asyncdb_test_two")')
    broken = add_revision(
        "asyncdb_0004",
        "asyncdb_0003",
        # DDL that succeeds, then a statement that fails: the whole revision must go.
        f'{CREATE_THREE}\nop.execute("SELECT no_such_column FROM asyncdb_test_two")',
        'op.drop_table("asyncdb_test_three")',
    )

    with pytest.raises(MigrationError) as caught:
        await migrate(fresh_url)
    message = str(caught.value)
    assert message.startswith("Migration asyncdb_0004 failed while upgrading")
    assert "The database is at revision asyncdb_0003." in message
    assert "then run `asyncdb migrate --revision head`" in message
    assert "QueryError" in message
    password = make_url(fresh_url).password
    assert password is None or password not in message
    assert caught.value.__cause__ is not None

    tables, _, versions = await schema_of(fresh_url)
    assert versions == ["asyncdb_0003"]
    assert {"asyncdb_audit_log", "asyncdb_test_two"} <= tables
    assert "asyncdb_test_three" not in tables

    # Fixed, the same command carries on from the last good revision.
    broken.unlink()
    add_revision(
        "asyncdb_0004", "asyncdb_0003", CREATE_THREE, 'op.drop_table("asyncdb_test_three")'
    )
    result = await migrate(fresh_url)
    assert (result.before, result.applied) == (("asyncdb_0003",), ("asyncdb_0004",))
    tables, _, versions = await schema_of(fresh_url)
    assert versions == ["asyncdb_0004"]
    assert "asyncdb_test_three" in tables


async def test_failure_in_the_first_revision_leaves_the_database_at_base(
    fresh_sqlite_url: str,
) -> None:
    await execute(fresh_sqlite_url, "CREATE TABLE asyncdb_audit_log (id INTEGER PRIMARY KEY)")
    with pytest.raises(MigrationError, match=r"^Migration asyncdb_0001 failed") as caught:
        await migrate(fresh_sqlite_url)
    # The table exists but was made outside the migrations: the message says so.
    assert "already exist, but no toolkit revision is recorded" in str(caught.value)
    assert "asyncdb migrate --adopt" in str(caught.value)
    _, _, versions = await schema_of(fresh_sqlite_url)
    assert versions == []


async def test_failed_downgrade_names_the_revision_and_the_command(
    fresh_url: str, add_revision: AddRevision
) -> None:
    add_revision(
        "asyncdb_0003", HEAD, CREATE_TWO, 'op.drop_table("asyncdb_test_two")\nraise RuntimeError'
    )
    await migrate(fresh_url)
    with pytest.raises(MigrationError) as caught:
        await downgrade(fresh_url, "base")
    message = str(caught.value)
    assert message.startswith("Migration asyncdb_0003 failed while downgrading")
    assert "RuntimeError" in message
    assert "The database is at revision asyncdb_0003." in message
    assert "`asyncdb migrate --downgrade base`" in message
    tables, _, versions = await schema_of(fresh_url)
    assert versions == ["asyncdb_0003"]
    assert "asyncdb_test_two" in tables  # its drop was rolled back with the revision


async def test_unknown_revisions_are_migration_errors(fresh_sqlite_url: str) -> None:
    with pytest.raises(MigrationError, match=r"nope.*asyncdb migrate --status"):
        await migrate(fresh_sqlite_url, revision="nope")
    await migrate(fresh_sqlite_url)
    await execute(fresh_sqlite_url, f"UPDATE {VERSION_TABLE} SET version_num = 'asyncdb_9999'")
    with pytest.raises(MigrationError, match=r"asyncdb_9999.*does not know"):
        await migration_status(fresh_sqlite_url)
    with pytest.raises(MigrationError, match="asyncdb_9999"):
        await migrate(fresh_sqlite_url)


# -- concurrency -------------------------------------------------------------------------


async def test_concurrent_callers_in_one_process_take_turns(fresh_url: str) -> None:
    results = await asyncio.gather(*(migrate(fresh_url) for _ in range(3)))
    assert sorted(len(r.applied) for r in results) == [0, 0, len(ALL)]
    assert all(r.after == (HEAD,) for r in results)
    _, _, versions = await schema_of(fresh_url)
    assert versions == [HEAD]


async def test_waiting_for_the_postgres_lock_is_bounded(fresh_pg_url: str) -> None:
    import asyncpg

    holder = await asyncpg.connect(_dsn(fresh_pg_url), timeout=10)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
        async with AsyncDatabaseManager(fresh_pg_url, statement_timeout=0.3) as db:
            with pytest.raises(MigrationError, match="Timed out waiting for the migration lock"):
                await migrate(db)
            assert db.pool_status().get("checked_out", 0) == 0
            await holder.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
            # The connection went back to the pool clean: the next run takes the lock.
            assert (await migrate(db)).applied == ALL
    finally:
        await holder.close()


async def test_waiting_for_the_sqlite_write_lock_is_bounded(fresh_sqlite_url: str) -> None:
    import sqlite3

    async with AsyncDatabaseManager(fresh_sqlite_url, busy_timeout=0.2) as db:
        holder = sqlite3.connect(make_url(fresh_sqlite_url).database or "", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(MigrationError, match="Timed out waiting for the database's write"):
                await migrate(db)
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        assert (await migrate(db)).applied == ALL


INIT_DATABASE_CHILD = """
import asyncio, logging, sys
from asyncdb import AsyncDatabaseManager, init_database

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
logging.getLogger("asyncdb").setLevel(logging.INFO)

async def main():
    db = await init_database(AsyncDatabaseManager(sys.argv[1]), auto_migrate=True)
    await db.dispose()

print("ready", flush=True)
sys.stdin.readline()
asyncio.run(main())
"""


@contextlib.contextmanager
def init_database_children(url: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two processes that call init_database(auto_migrate=True) once released by _go."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INIT_DATABASE_CHILD, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        for _ in range(2)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def _go(procs: list[subprocess.Popen[bytes]]) -> None:
    """Wait until every child has imported and is ready, then release them together."""
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == b"ready", line + (proc.stderr.read() if proc.stderr else b"")
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()


def _finish(procs: list[subprocess.Popen[bytes]]) -> list[str]:
    logs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        log = stdout.decode() + stderr.decode()
        assert proc.returncode == 0, log
        logs.append(log)
    return logs


@pytest.mark.slow
async def test_two_processes_init_database_on_postgres_migrate_once(fresh_pg_url: str) -> None:
    """Both processes wait on the advisory lock (held here first); one migrates."""
    import asyncpg

    holder = await asyncpg.connect(_dsn(fresh_pg_url), timeout=10)
    with init_database_children(fresh_pg_url) as procs:
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
            _go(procs)
            # Deterministic contention: release the lock once both children wait on it.
            database = make_url(fresh_pg_url).database
            deadline = asyncio.get_running_loop().time() + 60
            waiting = 0
            while waiting < 2:
                waiting = await holder.fetchval(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = $1 "
                    "AND l.classid = $2 AND l.objid = $3",
                    database,
                    ADVISORY_LOCK_KEY >> 32,
                    ADVISORY_LOCK_KEY & 0xFFFFFFFF,
                )
                exited = [proc.poll() for proc in procs if proc.poll() is not None]
                assert not exited, f"a child exited before taking the lock: {exited}"
                assert asyncio.get_running_loop().time() < deadline, "children never waited"
                await asyncio.sleep(0.05)  # polling an observed condition, with a deadline
            await holder.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
        finally:
            await holder.close()
        logs = _finish(procs)
    assert sum("Migrated " in log for log in logs) == 1, logs
    tables, indexes, versions = await schema_of(fresh_pg_url)
    assert versions == [HEAD]
    assert "asyncdb_audit_log" in tables
    assert indexes == AUDIT_INDEXES


@pytest.mark.slow
def test_two_processes_init_database_on_sqlite_migrate_once(fresh_sqlite_url: str) -> None:
    # A brand-new file: both processes also race to switch it to WAL at connect (SQLite
    # answers "locked" there without consulting the busy handler; the engine retries).
    with init_database_children(fresh_sqlite_url) as procs:
        _go(procs)
        logs = _finish(procs)
    assert sum("Migrated " in log for log in logs) == 1, logs
    _, indexes, versions = asyncio.run(schema_of(fresh_sqlite_url))
    assert versions == [HEAD]
    assert indexes == AUDIT_INDEXES


# -- the asyncdb migrate command ------------------------------------------------------------


@pytest.mark.slow
def test_cli_migrate_status_sql_and_downgrade(
    fresh_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--status", "--url", fresh_url]) == 1
    out = capsys.readouterr().out
    assert "current: base" in out
    assert f"pending: {', '.join(ALL)}" in out

    assert main(["migrate", "--url", fresh_url]) == 0
    out = capsys.readouterr().out
    assert f"Upgraded {make_url(fresh_url).render_as_string()} from base to {HEAD}" in out

    assert main(["migrate", "--url", fresh_url]) == 0
    assert "nothing to do" in capsys.readouterr().out

    assert main(["migrate", "--status", "--url", fresh_url]) == 0
    assert "up to date" in capsys.readouterr().out

    assert main(["migrate", "--downgrade", "base", "--yes", "--url", fresh_url]) == 0
    assert f"Downgraded {make_url(fresh_url).render_as_string()} from {HEAD} to base" in (
        capsys.readouterr().out
    )

    assert main(["migrate", "--sql", "--url", fresh_url]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE asyncdb_audit_log" in out
    tables, _, _ = asyncio.run(schema_of(fresh_url))
    assert "asyncdb_audit_log" not in tables  # --sql ran nothing


def test_cli_migrate_uses_asyncdb_url(
    fresh_sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ASYNCDB_URL", fresh_sqlite_url)
    assert main(["migrate"]) == 0
    assert "Upgraded" in capsys.readouterr().out
    assert asyncio.run(schema_of(fresh_sqlite_url))[2] == [HEAD]


def test_cli_migrate_failure_exits_2_with_what_to_run(
    fresh_sqlite_url: str, add_revision: AddRevision, capsys: pytest.CaptureFixture[str]
) -> None:
    add_revision("asyncdb_0003", HEAD, 'op.execute("SELECT * FROM no_such_table")')
    assert main(["migrate", "--url", fresh_sqlite_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("asyncdb: Migration asyncdb_0003 failed while upgrading")
    assert f"The database is at revision {HEAD}." in err
    assert "`asyncdb migrate --revision head`" in err
