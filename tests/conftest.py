"""Test configuration shared by unit and integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

# Keep the compiled, assertion-rewritten test modules (and the CLI subprocesses' compiled
# asyncdb) even where PYTHONDONTWRITEBYTECODE is set, as on this project's machines:
# every xdist worker rewrites and compiles all ~200 test modules again without them,
# 8.5 s of CPU per worker against 3 s (README, Development). __pycache__ is git-ignored.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

from tests import shared_dialects  # noqa: E402
from tests.faults.proxy import FaultProxy  # noqa: E402

# Engines of one configuration share a dialect and its compiled statements, as one
# long-lived engine would (tests/shared_dialects.py).
shared_dialects.install()

POSTGRES_URL = os.environ.get(
    "ASYNCDB_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("ASYNCDB_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _admin(url: str, statement: str) -> list[str]:
    """Run ``statement`` on ``url``'s server; a SELECT's first column is returned."""
    import asyncpg

    conn = await asyncpg.connect(_dsn(url), timeout=5)
    try:
        if statement.startswith("SELECT"):
            return [str(row[0]) for row in await conn.fetch(statement)]
        await conn.execute(statement)
        return []
    finally:
        await conn.close()


def examples(count: int) -> int:
    """Hypothesis examples for a generated test: ``count`` under CI=true (or with
    ``ASYNCDB_TEST_EXAMPLES=full``), a quarter of it in a developer's run, which keeps
    the fast loop fast while CI explores as far as before."""
    if IN_CI or os.environ.get("ASYNCDB_TEST_EXAMPLES", "").lower() == "full":
        return count
    return max(1, count // 4)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (a test run that was not killed)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Admin = Callable[[str, str], Coroutine[Any, Any, list[str]]]


async def _reap(url: str, prefix: str, admin: Admin, databases: str, drop: str) -> None:
    """Drop the ``<prefix>_<pid>_<hex>`` databases of test processes that are gone: a
    killed run cannot drop its own."""
    for name in await admin(url, databases):
        pid, _, rest = name.removeprefix(f"{prefix}_").partition("_")
        if name.startswith(f"{prefix}_") and pid.isdigit() and rest and not pid_alive(int(pid)):
            await admin(url, drop.format(name=name))


#: The (server URL, prefix) pairs this process has reaped already.
_reaped: set[tuple[str, str]] = set()


@contextlib.contextmanager
def _fresh_database(
    prefix: str,
    *,
    server: str,
    url: str,
    env: str,
    admin: Admin,
    databases: str,
    create: str,
    drop: str,
) -> Iterator[str]:
    """The URL of a new, empty database on ``server`` (``url``'s), dropped on exit.

    ``create`` and ``drop`` are statements with a ``{name}`` placeholder, run by
    ``admin``; ``databases`` lists the server's databases. Skips the test when no
    server answers, except under CI=true, where it fails. The databases a killed run
    left behind (its process is gone) are dropped.
    """
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(admin(url, create.format(name=name)))
    except Exception as exc:
        reason = f"{server} is not reachable at {url} ({type(exc).__name__})"
        if IN_CI:
            pytest.fail(f"{reason}; under CI=true the {server} tests must run.")
        pytest.skip(f"{reason}; set {env} to run these tests.")
    if (url, prefix) not in _reaped:  # once per process and server is enough
        _reaped.add((url, prefix))
        asyncio.run(_reap(url, prefix, admin, databases, drop))
    base, _, _ = url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(admin(url, drop.format(name=name)))


def fresh_postgres_database(prefix: str) -> contextlib.AbstractContextManager[str]:
    """The URL of a new, empty PostgreSQL database, dropped on exit."""
    return _fresh_database(
        prefix,
        server="PostgreSQL",
        url=POSTGRES_URL,
        env="ASYNCDB_TEST_POSTGRES_URL",
        admin=_admin,
        databases="SELECT datname FROM pg_database",
        create='CREATE DATABASE "{name}" TEMPLATE template0',
        drop='DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
    )


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for ``-n auto``: twice the CPUs (at most 8), as the tests spend about half
    their time waiting on a database server; ``ASYNCDB_TEST_WORKERS`` overrides."""
    configured = os.environ.get("ASYNCDB_TEST_WORKERS")
    if configured:
        return int(configured)
    return min(8, 2 * (os.cpu_count() or 1))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker saves its coverage data now: execnet ends workers with ``os._exit``,
    which skips the ``atexit`` save of ``coverage run``'s subprocess measurement."""
    if not hasattr(session.config, "workerinput"):
        return
    try:
        import coverage
    except ImportError:  # pragma: no cover - coverage is a dev dependency
        return
    current = coverage.Coverage.current()
    if current is not None:
        current.save()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end.

    Each pytest run gets its own database, so parallel runs never share tables.
    """
    with fresh_postgres_database("asyncdb_t") as url:
        yield url


async def _mysql_admin(url: str, statement: str) -> list[str]:
    import asyncmy
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    conn = await asyncmy.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 3306,
        user=parsed.username or "root",
        password=parsed.password or "",
        connect_timeout=5,
    )
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(statement)
            if statement.startswith("SELECT"):
                return [str(row[0]) for row in await cursor.fetchall()]
            return []
    finally:
        conn.close()


def fresh_mysql_database(prefix: str) -> contextlib.AbstractContextManager[str]:
    """The URL of a new, empty MariaDB/MySQL database, dropped on exit."""
    return _fresh_database(
        prefix,
        server="MariaDB/MySQL",
        url=MYSQL_URL,
        env="ASYNCDB_TEST_MYSQL_URL",
        admin=_mysql_admin,
        databases="SELECT schema_name FROM information_schema.schemata",
        create="CREATE DATABASE `{name}` CHARACTER SET utf8mb4",
        drop="DROP DATABASE IF EXISTS `{name}`",
    )


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB/MySQL database for this test session, dropped at the end."""
    with fresh_mysql_database("asyncdb_t") as url:
        yield url


@contextlib.contextmanager
def pristine_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a new SQLite or DuckDB file, PostgreSQL or MariaDB database."""
    if kind == "sqlite-file":
        yield f"sqlite+aiosqlite:///{tmp_path / f'fresh_{uuid.uuid4().hex[:6]}.db'}"
        return
    if kind == "duckdb":
        yield f"duckdb+aioduckdb:///{tmp_path / f'fresh_{uuid.uuid4().hex[:6]}.duckdb'}"
        return
    if kind == "mariadb":
        with fresh_mysql_database("asyncdb_fresh") as url:
            yield url
        return
    with fresh_postgres_database("asyncdb_fresh") as url:
        yield url


@pytest.fixture(params=["sqlite-file", "postgres"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own for one test, on a SQLite file and on PostgreSQL."""
    with pristine_database(str(request.param), tmp_path) as url:
        yield url


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[FaultProxy]:
    """A started loopback fault proxy in front of the test PostgreSQL server."""
    async with FaultProxy.in_front_of(postgres_url) as running:
        yield running
