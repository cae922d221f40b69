"""A RepositoryCache in Redis shared by two processes; Redis killed mid-run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncdb import AsyncDatabaseManager, Repository, RepositoryCache
from asyncdb.redis_cache import RedisCacheBackend
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.models import Counter
from tests.integration.scaleout.servers import RedisServer

pytestmark = pytest.mark.scaleout

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[AsyncDatabaseManager]:
    manager = manager_for(postgres_url)
    await manager.connect()
    try:
        await reset_schema(manager)
        yield manager
    finally:
        await manager.dispose()


class Peer:
    """Process B: another Python process with its own manager and cache."""

    def __init__(self, db_url: str, redis_url: str, local_ttl: str, prefix: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.scaleout.cache_peer", db_url, redis_url,
             local_ttl, prefix],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        assert "error" not in answer, answer["error"]
        return answer

    def get(self, ident: int) -> Any:
        return self.ask(op="get", id=ident)["value"]

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=30)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        peer.close()


async def test_two_processes_share_entries_and_invalidations(
    db: AsyncDatabaseManager, postgres_url: str, redis_server: RedisServer, peers: list[Peer]
) -> None:
    backend = RedisCacheBackend(redis_server.url, prefix="t1")
    cache = RepositoryCache(ttl=60.0, backend=backend)
    repo = Repository(Counter, db, cache=cache)
    await repo.create(id=1, value=1)
    peer = Peer(postgres_url, redis_server.url, "30", "t1")
    peers.append(peer)
    # B reads (a miss, stored in Redis), then hits its local layer.
    assert peer.get(1) == 1
    second = peer.ask(op="get", id=1)
    assert second["value"] == 1 and second["stats"]["hits"] == 1
    # A hits the entry B stored: the cache is shared.
    hits = cache.hits
    assert (await repo.get(1)).value == 1
    assert cache.hits == hits + 1
    # A's commit invalidates: Redis at once (a read without the local layer is fresh
    # as soon as commit() returned), B's local layer when the message arrives.
    await repo.update(1, value=2)
    assert (await repo.get(1)).value == 2
    peer.ask(op="wait_received", count=1)
    assert peer.get(1) == 2
    await backend.aclose()


async def test_redis_killed_mid_run_degrades_to_the_database(
    db: AsyncDatabaseManager, postgres_url: str, redis_server: RedisServer, peers: list[Peer]
) -> None:
    backend = RedisCacheBackend(redis_server.url, prefix="t2", retry_after=0.2)
    cache = RepositoryCache(ttl=60.0, backend=backend)
    repo = Repository(Counter, db, cache=cache)
    peer = Peer(postgres_url, redis_server.url, "30", "t2")
    peers.append(peer)
    for ident in range(1, 6):
        await repo.create(id=ident, value=0)
    expected = dict.fromkeys(range(1, 6), 0)
    for step in range(1, 13):
        if step == 6:
            redis_server.kill()
        for ident in range(1, 6):
            # Both processes read every row (filling and hitting the cache while Redis
            # lives), then A writes; no call raises, no read returns an old value.
            assert (await repo.get(ident)).value == expected[ident]
            assert peer.get(ident) == expected[ident]
            await repo.update(ident, value=step)
            expected[ident] = step
            assert (await repo.get(ident)).value == step
            assert peer.get(ident) == step
    assert backend.stats()["redis_errors"] > 0
    assert cache.stats()["hits"] > 0
    await backend.aclose()
