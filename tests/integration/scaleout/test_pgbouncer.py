"""Behind pgbouncer in transaction mode, 5 server connections, many concurrent clients."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from asyncdb import AsyncDatabaseManager, AsyncDBError, AsyncUnitOfWork, Repository
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.models import Item
from tests.integration.scaleout.servers import pgbouncer

pytestmark = pytest.mark.scaleout


@pytest.fixture(scope="module")
def bouncer_port() -> Iterator[int]:
    with pgbouncer(pool_size=5) as port:
        yield port


def via_bouncer(postgres_url: str, port: int) -> str:
    return postgres_url.replace(":5432/", f":{port}/")


async def mixed_operations(db: AsyncDatabaseManager, task: int, count: int) -> list[str]:
    """``count`` repository operations of every kind; the errors they raised."""
    repo = Repository(Item, db)
    errors: list[str] = []
    for step in range(count):
        ident = task * 10_000 + step
        try:
            match step % 5:
                case 0:
                    await repo.create(id=ident, name=f"n{ident}", qty=step)
                case 1:
                    await repo.update(ident - 1, qty=step)
                case 2:
                    assert (await repo.get(ident - 2)).qty == step - 1
                    assert await repo.count(category=None) >= 1
                case 3:
                    async with AsyncUnitOfWork(db) as uow:
                        items = uow.get_repository(Item)
                        await items.create(id=ident, name="u")
                        await items.delete(ident, soft=False)
                case _:
                    assert await repo.find_by(name=f"n{ident - 4}")
        except (AsyncDBError, AssertionError) as exc:
            cause: Any = exc.__cause__
            errors.append(str(cause if cause is not None else exc))
    return errors


async def run_load(db: AsyncDatabaseManager, tasks: int, count: int) -> list[str]:
    results = await asyncio.gather(*(mixed_operations(db, t, count) for t in range(tasks)))
    return [error for errors in results for error in errors]


@pytest.mark.slow
async def test_50_tasks_x_100_operations_through_pgbouncer(
    postgres_url: str, bouncer_port: int
) -> None:
    # One client connection per task: they queue in pgbouncer for its 5 server
    # connections, which is what pgbouncer is for.
    db = manager_for(
        via_bouncer(postgres_url, bouncer_port),
        pgbouncer=True,
        pool_size=50,
        max_overflow=0,
        pool_timeout=60.0,
    )
    await db.connect()
    try:
        await reset_schema(db)
        errors = await run_load(db, tasks=50, count=100)
        assert errors == []
        assert await Repository(Item, db).count() == 50 * 20
        report = await db.health_check()
        assert report.healthy
    finally:
        await db.dispose()


async def test_without_the_setting_prepared_statements_collide(
    postgres_url: str, bouncer_port: int
) -> None:
    # statement_timeout=None: a plain manager would fail even earlier, at connect, on
    # the statement_timeout startup parameter that pgbouncer refuses (checked below).
    db = manager_for(via_bouncer(postgres_url, bouncer_port), statement_timeout=None, pool_size=20)
    await db.connect()
    try:
        await reset_schema(db)
        errors = await run_load(db, tasks=20, count=20)
        assert any("prepared statement" in error for error in errors), errors[:5]
    finally:
        await db.dispose()
    plain = manager_for(via_bouncer(postgres_url, bouncer_port))
    with pytest.raises(AsyncDBError):
        await plain.connect()
