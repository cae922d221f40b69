"""Read replicas against a real streaming standby: routing, read-your-writes, lag, failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from sqlalchemy import text

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    ConfigurationError,
    Repository,
    route_reads,
)
from tests.integration.models import Counter
from tests.integration.scaleout.conftest import make_routed
from tests.integration.scaleout.servers import MAIN_PORT, PgServer, wait_replayed

pytestmark = pytest.mark.scaleout

T = TypeVar("T")

IN_RECOVERY = text("SELECT pg_is_in_recovery()")


async def in_task(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` in a new task: its own context, as a new request would have."""
    return await asyncio.create_task(fn())


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for a condition the background monitor establishes (polled, bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def unit_in_recovery(db: AsyncDatabaseManager, **options: Any) -> bool:
    async with AsyncUnitOfWork(db, **options) as uow:
        return bool((await uow.session.execute(IN_RECOVERY)).scalar_one())


def reads(db: AsyncDatabaseManager) -> int:
    assert db.router is not None
    return db.router.nodes[0].reads


async def test_read_only_unit_runs_on_the_replica_and_a_writing_unit_on_the_primary(
    routed: AsyncDatabaseManager,
) -> None:
    assert await in_task(lambda: unit_in_recovery(routed, read_only=True)) is True
    assert await in_task(lambda: unit_in_recovery(routed)) is False
    # Explicit overrides, per unit.
    assert await in_task(lambda: unit_in_recovery(routed, read_only=True, route="primary")) is False
    with pytest.raises(ConfigurationError, match="read-only"):
        AsyncUnitOfWork(routed, route="replica")


async def test_standalone_read_runs_on_the_replica(
    routed: AsyncDatabaseManager, standby: PgServer
) -> None:
    repo = Repository(Counter, routed)
    await in_task(lambda: repo.create(id=1, value=1))
    wait_replayed(MAIN_PORT, standby)
    standby.sql("SELECT pg_wal_replay_pause()")
    try:
        await in_task(lambda: repo.update(1, value=2))
        before = reads(routed)
        # A task that did not write reads the replica, which has not replayed value=2.
        row = await in_task(lambda: repo.get(1))
        assert row.value == 1
        assert reads(routed) == before + 1
        # Per call and per repository, the primary on request.
        with route_reads("primary"):
            assert (await in_task(lambda: repo.get(1))).value == 2
        primary_repo = Repository(Counter, routed, route="primary")
        assert (await in_task(lambda: primary_repo.get(1))).value == 2
    finally:
        standby.sql("SELECT pg_wal_replay_resume()")


async def test_read_your_writes_follows_the_task(
    postgres_url: str, standby: PgServer, database: str
) -> None:
    db = await make_routed(postgres_url, standby, database, sticky_after_write=2.0)
    try:
        assert db.router is not None
        now = [1000.0]
        db.router.clock = lambda: now[0]
        repo = Repository(Counter, db)
        standby.sql("SELECT pg_wal_replay_pause()")
        try:

            async def writer() -> tuple[int | None, bool, int | None]:
                await repo.create(id=7, value=70)
                mine = await repo.get_by_id(7)  # its own write, read back
                in_recovery = await unit_in_recovery(db, read_only=True)
                # A sub-task started by the request shares its read-your-writes state.
                child = await asyncio.create_task(repo.get_by_id(7))
                return (
                    None if mine is None else mine.value,
                    in_recovery,
                    None if child is None else child.value,
                )

            assert await in_task(writer) == (70, False, 70)
            # Another task, which wrote nothing, reads the paused replica.
            assert await in_task(lambda: repo.get_by_id(7)) is None
            assert await in_task(lambda: unit_in_recovery(db, read_only=True)) is True
        finally:
            standby.sql("SELECT pg_wal_replay_resume()")
        wait_replayed(MAIN_PORT, standby)

        async def sticky_then_not() -> tuple[bool, bool, bool]:
            await repo.update(7, value=71)
            wait_replayed(MAIN_PORT, standby)
            during = await unit_in_recovery(db, read_only=True)
            forced = await unit_in_recovery(db, read_only=True, route="replica")
            now[0] += 2.5  # sticky_after_write has passed
            after = await unit_in_recovery(db, read_only=True)
            return during, forced, after

        assert await in_task(sticky_then_not) == (False, True, True)
    finally:
        await db.dispose()


async def test_a_unit_s_commit_keeps_the_task_reads_on_the_primary(
    routed: AsyncDatabaseManager,
) -> None:
    # A unit commits in a shielded helper task; its write still counts for this task.
    router = routed.router
    assert router is not None

    async def write_then_read() -> bool:
        async with AsyncUnitOfWork(routed) as uow:
            await uow.get_repository(Counter).create(id=3, value=30)
        return await unit_in_recovery(routed, read_only=True)

    sticky = router.primary_reads["sticky"]
    assert await in_task(write_then_read) is False
    assert router.primary_reads["sticky"] == sticky + 1
    # A task that wrote nothing reads the replica.
    assert await in_task(lambda: unit_in_recovery(routed, read_only=True)) is True


async def test_lagging_replica_is_skipped_until_it_catches_up(
    postgres_url: str, standby: PgServer, database: str
) -> None:
    db = await make_routed(postgres_url, standby, database, max_replica_lag=0.2)
    try:
        router = db.router
        assert router is not None
        repo = Repository(Counter, db)
        node = router.nodes[0]
        await until(lambda: node.healthy and node.lag is not None and node.lag <= 0.2)
        standby.sql("SELECT pg_wal_replay_pause()")
        try:
            await in_task(lambda: repo.create(id=3, value=30))
            await until(lambda: node.lag is not None and node.lag > 0.2)
            # The replica has not replayed the row; the read goes to the primary.
            assert (await in_task(lambda: repo.get(3))).value == 30
            assert await in_task(lambda: unit_in_recovery(db, read_only=True)) is False
            health = await db.health_check()
            replica = health.nodes[1]
            assert replica["role"] == "replica"
            assert replica["lag_ok"] is False
            assert replica["lag_seconds"] > 0.2
        finally:
            standby.sql("SELECT pg_wal_replay_resume()")
        await until(lambda: node.lag is not None and node.lag <= 0.2)
        assert await in_task(lambda: unit_in_recovery(db, read_only=True)) is True
    finally:
        await db.dispose()


async def test_stopped_replica_falls_back_to_the_primary_then_rejoins(
    routed: AsyncDatabaseManager, standby: PgServer
) -> None:
    repo = Repository(Counter, routed)
    await in_task(lambda: repo.create(id=5, value=50))
    wait_replayed(MAIN_PORT, standby)
    assert await in_task(lambda: unit_in_recovery(routed, read_only=True)) is True
    router = routed.router
    assert router is not None
    node = router.nodes[0]
    standby.stop("fast")
    try:
        # No error surfaces: reads (standalone, units) land on the primary.
        for _ in range(3):
            assert (await in_task(lambda: repo.get(5))).value == 50
            assert await in_task(lambda: unit_in_recovery(routed, read_only=True)) is False
        assert node.healthy is False
        health = await routed.health_check()
        assert health.healthy is True
        assert [n["role"] for n in health.nodes] == ["primary", "replica"]
        assert health.nodes[1]["healthy"] is False
        snapshot = routed.metrics.snapshot()["routing"]
        assert snapshot["replicas"][0]["healthy"] is False
        assert snapshot["primary_reads"]["no_replica"] >= 3
    finally:
        standby.start()
    # The monitor retries after the backoff; the replica rejoins.
    await until(lambda: node.healthy, timeout=60.0)
    assert await in_task(lambda: unit_in_recovery(routed, read_only=True)) is True
    assert (await in_task(lambda: repo.get(5))).value == 50
