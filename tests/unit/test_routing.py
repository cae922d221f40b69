"""Routing decisions and replica settings (no server: the choice itself does no I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from asyncdb import ConfigurationError, DatabaseSettings, route_reads
from asyncdb._routing import ReplicaNode, Router

PRIMARY = "postgresql+asyncpg://app:s3cret@primary:5432/app"
REPLICA_A = "postgresql+asyncpg://app:s3cret@replica-a:5432/app"
REPLICA_B = "postgresql+asyncpg://app:s3cret@replica-b:5432/app"


def test_replicas_come_from_the_environment_comma_separated() -> None:
    settings = DatabaseSettings.from_env(
        {"ASYNCDB_URL": PRIMARY, "ASYNCDB_REPLICA_URLS": f"{REPLICA_A}, {REPLICA_B}"}
    )
    assert [s.split("@")[1] for s in settings.replicas] == [
        "replica-a:5432/app",
        "replica-b:5432/app",
    ]
    assert "s3cret" not in repr(settings)
    assert settings.masked_replicas[0] == "postgresql+asyncpg://app:***@replica-a:5432/app"


def test_replica_settings_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL primary"):
        DatabaseSettings(url="sqlite+aiosqlite:///x.db", replicas=(REPLICA_A,))
    with pytest.raises(ConfigurationError, match="url"):
        DatabaseSettings(url=PRIMARY, replicas=("not a url",))
    with pytest.raises(ConfigurationError, match="max_replica_lag"):
        DatabaseSettings(url=PRIMARY, max_replica_lag=-1.0)
    with pytest.raises(ConfigurationError, match="sticky_after_write"):
        DatabaseSettings(url=PRIMARY, sticky_after_write=float("nan"))
    with pytest.raises(ConfigurationError, match="pgbouncer"):
        DatabaseSettings(url=PRIMARY, pgbouncer="yes")  # type: ignore[arg-type]


def test_a_route_must_be_known() -> None:
    with pytest.raises(ConfigurationError, match="route must be one of"), route_reads("elsewhere"):  # type: ignore[arg-type]
        pass


@pytest.fixture
def router() -> Iterator[Router]:
    nodes = []
    for index, url in enumerate((REPLICA_A, REPLICA_B)):
        engine = create_async_engine(url)
        node = ReplicaNode(f"replica{index + 1}", url, engine, {})
        node.mark_up(0.0, True, 0.0)
        nodes.append(node)
    now = [100.0]
    router = Router(
        nodes, sticky_after_write=2.0, max_lag=1.0, check_interval=1.0, probe_timeout=1.0
    )
    router.clock = lambda: now[0]
    router.now = now  # type: ignore[attr-defined]
    yield router
    for node in nodes:
        asyncio.run(node.engine.dispose())


def test_round_robin_over_usable_replicas(router: Router) -> None:
    picked = {node.name for node in (router.choose(), router.choose())}  # type: ignore[union-attr]
    assert picked == {"replica1", "replica2"}


def test_lagging_and_down_replicas_are_skipped_until_they_recover(router: Router) -> None:
    first, second = router.nodes
    first.mark_up(100.0, True, 5.0)  # lag above max_lag
    assert all(router.choose() is second for _ in range(4))
    second.mark_down(100.0, "ConnectionRefusedError")  # backoff of 1 s
    assert router.choose() is None
    assert router.primary_reads["no_replica"] == 1
    router.now[0] += 1.5  # type: ignore[attr-defined]
    assert router.choose() is second  # tried again after the backoff
    second.mark_down(router.clock(), "ConnectionRefusedError")
    assert second.retry_at - router.clock() == 2.0  # doubled
    first.mark_up(router.clock(), True, 0.1)
    assert router.choose() is first
    first.mark_up(router.clock(), False, 0.0)  # promoted: no longer follows the primary
    assert router.choose() is None


def test_read_your_writes_is_task_local_and_time_bound(router: Router) -> None:
    async def scenario() -> tuple[bool, bool, bool, bool]:
        async def writer() -> tuple[bool, bool]:
            router.note_write()
            sticky = router.choose() is None
            router.now[0] += 2.5  # type: ignore[attr-defined]
            return sticky, router.choose() is not None

        other_before = router.choose() is not None
        sticky, after = await asyncio.create_task(writer())
        other_after = router.choose() is not None
        return other_before, sticky, after, other_after

    assert asyncio.run(scenario()) == (True, True, True, True)
    assert router.primary_reads["sticky"] == 1


def test_forced_routes(router: Router) -> None:
    with route_reads("primary"):
        assert router.choose() is None
        assert router.choose("replica") is not None  # an explicit route wins
    router.note_write()
    assert router.choose() is None
    assert router.choose("replica") is not None  # ignores read-your-writes
