"""Fixtures of the scale-out tests: a streaming standby of the main cluster, managers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from asyncdb import AsyncDatabaseManager
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.scaleout.servers import (
    MAIN_PORT,
    PgServer,
    ensure_replication_hba,
    standby_of,
    unavailable,
    wait_replayed,
)

#: The xdist groups (--dist loadgroup) of the scale-out test files. A group runs on one
#: worker, which builds what its files need once (a base backup is not cheap); three
#: groups of about the same length keep them off the suite's critical path (one group
#: ran 50-80 s on one worker while the others finished).
_GROUPS = {
    "test_replicas.py": "scaleout-replicas",
    "test_commit_outcome.py": "scaleout-standby",
    "test_fastapi_routing.py": "scaleout-standby",
    "test_failover.py": "scaleout-services",
    "test_pgbouncer.py": "scaleout-services",
    "test_redis_cache.py": "scaleout-services",
}


#: Fixtures that start a PostgreSQL server of their own: a base backup and a postmaster
#: (``standby``), or initdb and two postmasters (the failover ``pair``): 4-15 s of set-up
#: on this machine, so their tests are ``slow`` (left out of the fast loop, run by CI).
_SERVER_FIXTURES = {"standby", "pair"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "scaleout" in item.nodeid:
            item.add_marker(pytest.mark.scaleout)
            group = _GROUPS.get(item.path.name, "scaleout")
            item.add_marker(pytest.mark.xdist_group(group))
            if _SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
                item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def standby(postgres_url: str) -> Iterator[PgServer]:
    """A streaming standby of the main cluster on a free port, removed at the end."""
    try:
        ensure_replication_hba()
        server = standby_of(MAIN_PORT)
    except (RuntimeError, OSError) as exc:
        unavailable(f"could not start a standby of the main cluster ({exc})")
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def database(postgres_url: str) -> str:
    return postgres_url.rpartition("/")[2]


@pytest.fixture
async def routed(
    postgres_url: str, standby: PgServer, database: str
) -> AsyncIterator[AsyncDatabaseManager]:
    """A manager with the standby as its replica, on fresh tables replayed there."""
    db = await make_routed(postgres_url, standby, database)
    try:
        yield db
    finally:
        await db.dispose()


async def make_routed(
    postgres_url: str, standby: PgServer, database: str, **overrides: Any
) -> AsyncDatabaseManager:
    options: dict[str, Any] = {
        "replicas": [standby.url(database)],
        "replica_check_interval": 0.05,
        "connect_timeout": 3.0,
        "max_replica_lag": None,
    }
    options.update(overrides)
    db = manager_for(postgres_url, **options)
    await db.connect()
    try:
        await reset_schema(db)
        wait_replayed(MAIN_PORT, standby)
    except BaseException:
        await db.dispose()
        raise
    return db
