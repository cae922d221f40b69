"""RepositoryCache pieces without a database: the LRU backend, tokens, settings."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import JSON, Integer, String, event
from sqlalchemy.ext.mutable import MutableDict
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.orm.attributes import instance_state

from asyncdb import (
    AsyncDatabaseManager,
    CacheBackend,
    ConfigurationError,
    MemoryCacheBackend,
    Repository,
    RepositoryCache,
)
from asyncdb._cache import _CACHES, _fresh, _Model, cache_stats
from asyncdb._changes import _LISTENERS, Changes, changed_in_transaction, record_changes


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Other(DeclarativeBase):
    """A registry of its own, so these models never reach the test database."""


class Doc(Other):
    __tablename__ = "u_doc"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    tags: Mapped[Any] = mapped_column(JSON, default=None)


class Tracked(Other):
    __tablename__ = "u_tracked"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(MutableDict.as_mutable(JSON()))


class Hooked(Other):
    __tablename__ = "u_hooked"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)


@event.listens_for(Hooked, "load")
def _on_load(target: Any, context: Any) -> None:
    """A user hook that a cache hit could not fire."""


async def fill(backend: MemoryCacheBackend, key: Any, values: dict[str, Any]) -> bool:
    token = await backend.begin_load("ns", key)
    try:
        return await backend.store("ns", key, values, token, None)
    finally:
        backend.end_load("ns", key, token)


# -- the in-process backend --------------------------------------------------------------


async def test_lru_drops_the_least_recently_used() -> None:
    backend = MemoryCacheBackend(max_entries=2)
    await fill(backend, 1, {"v": 1})
    await fill(backend, 2, {"v": 2})
    assert await backend.get("ns", 1) == {"v": 1}  # 1 is now the most recent
    await fill(backend, 3, {"v": 3})
    assert await backend.get("ns", 2) is None
    assert await backend.get("ns", 1) == {"v": 1}
    assert await backend.get("ns", 3) == {"v": 3}
    assert backend.stats() == {"size": 2, "max_entries": 2, "evictions": 1, "expirations": 0}


async def test_ttl_uses_the_injected_clock() -> None:
    clock = Clock()
    backend = MemoryCacheBackend(clock=clock)
    token = await backend.begin_load("ns", 1)
    assert await backend.store("ns", 1, {"v": 1}, token, 5.0)
    backend.end_load("ns", 1, token)
    clock.now += 4.99
    assert await backend.get("ns", 1) == {"v": 1}
    clock.now += 0.01
    assert await backend.get("ns", 1) is None
    assert backend.stats()["expirations"] == 1
    assert len(backend) == 0


async def test_store_after_an_invalidation_of_the_key_is_refused() -> None:
    backend = MemoryCacheBackend()
    slow = await backend.begin_load("ns", 1)
    backend.invalidate("ns", [1])
    late = await backend.begin_load("ns", 1)  # began after the invalidation: fine
    assert not await backend.store("ns", 1, {"v": "old"}, slow, None)
    assert await backend.store("ns", 1, {"v": "new"}, late, None)
    backend.end_load("ns", 1, slow)
    backend.end_load("ns", 1, late)
    assert await backend.get("ns", 1) == {"v": "new"}
    assert backend._loads == {}


async def test_concurrent_readers_share_a_token_until_it_is_spoiled() -> None:
    backend = MemoryCacheBackend()
    a = await backend.begin_load("ns", 1)
    b = await backend.begin_load("ns", 1)
    assert a is b
    backend.end_load("ns", 1, a)
    assert await backend.store("ns", 1, {"v": 1}, b, None)
    backend.end_load("ns", 1, b)
    assert backend._loads == {}


async def test_namespace_invalidation_drops_entries_and_spoils_reads() -> None:
    backend = MemoryCacheBackend()
    await fill(backend, 1, {"v": 1})
    other = await backend.begin_load("other", 1)
    assert await backend.store("other", 1, {"v": 1}, other, None)
    slow = await backend.begin_load("ns", 2)
    backend.invalidate("ns", None)
    assert await backend.get("ns", 1) is None
    assert not await backend.store("ns", 2, {"v": 2}, slow, None)
    backend.end_load("ns", 2, slow)
    assert await backend.get("other", 1) == {"v": 1}
    assert await fill(backend, 1, {"v": "again"})
    assert await backend.get("ns", 1) == {"v": "again"}


async def test_clear_spoils_reads_in_progress() -> None:
    backend = MemoryCacheBackend()
    await fill(backend, 1, {"v": 1})
    slow = await backend.begin_load("ns", 2)
    backend.clear()
    assert await backend.get("ns", 1) is None
    assert not await backend.store("ns", 2, {"v": 2}, slow, None)


def test_memory_backend_is_a_cache_backend() -> None:
    assert isinstance(MemoryCacheBackend(), CacheBackend)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_entries_is_validated(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_entries"):
        MemoryCacheBackend(max_entries=bad)
    with pytest.raises(ConfigurationError, match="max_entries"):
        RepositoryCache(max_entries=bad)


# -- RepositoryCache settings and wiring -------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1.0, True, "5"])
def test_ttl_is_validated(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        RepositoryCache(ttl=bad)


def test_ttl_none_means_no_expiry_and_backend_takes_its_own_options() -> None:
    assert RepositoryCache(ttl=None).ttl is None
    backend = MemoryCacheBackend(max_entries=5)
    cache = RepositoryCache(backend=backend)
    assert cache.backend is backend
    with pytest.raises(ConfigurationError, match="backend"):
        RepositoryCache(backend=backend, max_entries=10)


def test_one_cache_serves_one_manager() -> None:
    first = AsyncDatabaseManager("sqlite+aiosqlite:///:memory:")
    second = AsyncDatabaseManager("sqlite+aiosqlite:///:memory:")
    cache = RepositoryCache()
    Repository(Doc, first, cache=cache)
    Repository(Doc, first, cache=cache)  # attaching again is a no-op
    assert _LISTENERS[first] == [cache._on_commit]
    assert _CACHES[first] == [cache]
    with pytest.raises(ConfigurationError, match="one cache per manager"):
        Repository(Doc, second, cache=cache)
    assert second not in _CACHES
    stats = cache_stats(first)
    assert stats["caches"] == 1
    assert stats["hit_rate"] is None


def test_commit_listener_invalidates_rows_and_counts() -> None:
    db = AsyncDatabaseManager("sqlite+aiosqlite:///:memory:")
    cache = RepositoryCache()
    Repository(Doc, db, cache=cache)
    cache._model(Doc)
    seen: list[tuple[str, Any]] = []

    class Spy(MemoryCacheBackend):
        def invalidate(self, namespace: str, keys: Any) -> None:
            seen.append((namespace, None if keys is None else sorted(keys)))

    cache.backend = Spy()
    changes: Changes = {Doc: {(1,), (2,)}, Tracked: None}
    cache._on_commit(changes)
    ns = f"{Doc.__module__}.Doc"
    assert seen == [(ns + "#query", None), (ns, [(1,), (2,)])]  # Tracked is not cached
    assert cache.stats()["invalidations"] == 2
    seen.clear()
    cache._on_commit({Doc: None})
    assert seen == [(ns + "#query", None), (ns, None)]


# -- models, values, instances -----------------------------------------------------------


def test_models_needing_load_events_are_not_cached() -> None:
    assert _Model(Doc).cacheable
    assert not _Model(Tracked).cacheable  # MutableDict listens to "load"
    assert not _Model(Hooked).cacheable


def test_built_instance_looks_loaded_and_copies_mutable_values() -> None:
    info = _Model(Doc)
    tags = {"a": [1, 2]}
    obj = info.build({"id": 3, "title": "t", "tags": tags}, (3,))
    state = instance_state(obj)
    assert state.key == (Doc, (3,), None)
    assert state.detached and not state.modified
    assert obj.tags == tags and obj.tags is not tags
    obj.tags["a"].append(3)
    assert tags == {"a": [1, 2]}
    values = info.values_of(obj)
    assert values == {"id": 3, "title": "t", "tags": {"a": [1, 2, 3]}}
    assert values is not None and values["tags"] is not obj.tags


def test_values_of_refuses_half_loaded_instances() -> None:
    info = _Model(Doc)
    obj = Doc(id=1, title="t")  # "tags" never set
    assert info.values_of(obj) is None


def test_pk_of_accepts_the_coerced_id_shapes() -> None:
    info = _Model(Doc)
    assert info.pk_of(5) == (5,)
    assert info.pk_of((5,)) == (5,)
    assert info.pk_of({"id": 5}) == (5,)


def test_query_keys_freeze_filters() -> None:
    key = RepositoryCache._query_key("count", {"id__in": [1, 2], "tags": {"x": {1}}}, False)
    assert key == RepositoryCache._query_key("count", {"tags": {"x": {1}}, "id__in": (1, 2)}, False)
    assert key != RepositoryCache._query_key("count", {"id__in": [1, 2]}, True)
    assert RepositoryCache._query_key("count", {"x": bytearray(b"1")}, False) is None


# -- which transactions may use the cache ------------------------------------------------


@dataclasses.dataclass
class FakeDialect:
    name: str
    default_isolation_level: str | None = "READ COMMITTED"


@pytest.mark.parametrize(
    ("dialect", "options", "fresh"),
    [
        (FakeDialect("sqlite"), {"asyncdb_autocommit": True}, True),
        (FakeDialect("sqlite"), {}, True),  # BEGIN IMMEDIATE holds the write lock
        (FakeDialect("sqlite"), {"asyncdb_read_only": True}, False),  # a snapshot
        (FakeDialect("postgresql"), {"isolation_level": "AUTOCOMMIT"}, True),
        (FakeDialect("postgresql"), {}, True),
        (FakeDialect("postgresql", "REPEATABLE READ"), {}, False),
        (FakeDialect("postgresql"), {"isolation_level": "SERIALIZABLE"}, False),
        (FakeDialect("postgresql"), {"isolation_level": "REPEATABLE READ"}, False),
        (FakeDialect("mysql", "REPEATABLE READ"), {}, False),
        (FakeDialect("mysql"), {"isolation_level": "AUTOCOMMIT"}, True),
    ],
)
def test_fresh_reads_decision(dialect: FakeDialect, options: dict[str, Any], fresh: bool) -> None:
    assert _fresh(options, dialect) is fresh


# -- the change log ----------------------------------------------------------------------


def test_unknown_rows_absorb_known_keys() -> None:
    class FakeSession:
        info: dict[str, Any] = {}

    session: Any = FakeSession()
    record_changes(session, Doc, [(1,)])
    record_changes(session, Doc, [(2,)])
    assert changed_in_transaction(session) == {Doc: {(1,), (2,)}}
    record_changes(session, Doc, None)
    record_changes(session, Doc, [(3,)])
    assert changed_in_transaction(session) == {Doc: None}
