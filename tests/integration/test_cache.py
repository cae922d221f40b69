"""RepositoryCache on every backend: hits, fresh instances, invalidation at commit, races."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Any

import pytest
from sqlalchemy import Table, delete, event, inspect, text, update
from sqlalchemy.util import await_only

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    ConflictError,
    MemoryCacheBackend,
    NotFoundError,
    Repository,
    RepositoryCache,
    StateError,
    get_audit_logs,
)
from tests.cases import each_case
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.models import Counter, Item, Order


class Boom(Exception):
    """Raised by tests to abort a unit of work."""


@pytest.fixture
def cache() -> RepositoryCache:
    return RepositoryCache(ttl=60.0)


@pytest.fixture
def items(db: AsyncDatabaseManager, cache: RepositoryCache) -> Repository[Item]:
    return Repository(Item, db, cache=cache)


async def seed(db: AsyncDatabaseManager, **values: Any) -> int:
    """A row written without the cache in the way."""
    values.setdefault("name", "old")
    item = await Repository(Item, db).create(**values)
    return item.id


def figures(cache: RepositoryCache) -> tuple[int, int]:
    stats = cache.stats()
    return stats["hits"], stats["misses"]


# -- hits and misses ---------------------------------------------------------------------


async def test_second_read_is_a_hit_and_counted(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db, qty=3)
    first = await items.get_by_id(x)
    second = await items.get_by_id(x)
    assert first is not None and second is not None
    assert (second.name, second.qty) == ("old", 3)
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["stores"], stats["size"]) == (1, 1, 1, 1)
    assert stats["hit_rate"] == 0.5
    assert await items.get(x) is not None
    assert figures(cache) == (2, 1)
    assert await items.get_by_id(x + 1000) is None  # a missing row is never cached
    assert await items.get_by_id(x + 1000) is None
    assert figures(cache) == (2, 3)


async def test_figures_reach_the_manager(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    counters = Repository(Counter, db, cache=cache)
    other = RepositoryCache()
    Repository(Item, db, cache=other)  # a second cache on the same manager
    x = await seed(db)
    await items.get_by_id(x)
    await items.get_by_id(x)
    await Repository(Counter, db).create(id=1)
    await counters.get_by_id(1)
    snapshot = db.metrics.snapshot()["cache"]
    assert snapshot["caches"] == 2
    assert (snapshot["hits"], snapshot["misses"], snapshot["size"]) == (1, 2, 2)
    assert snapshot["hit_rate"] == round(1 / 3, 4)
    for name in ("evictions", "expirations", "invalidations", "bypasses"):
        assert snapshot[name] == 0


async def test_standalone_hit_checks_out_no_connection(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db)
    await items.get_by_id(x)
    checkouts = 0

    def count(*args: Any) -> None:
        nonlocal checkouts
        checkouts += 1

    pool = db.engine.sync_engine.pool
    event.listen(pool, "checkout", count)
    try:
        for _ in range(50):
            assert await items.get_by_id(x) is not None
        assert await items.count() == 1  # a miss: reads
        assert await items.count() == 1
        assert await items.exists(name="old")
        assert await items.exists(name="old")
    finally:
        event.remove(pool, "checkout", count)
    assert checkouts == 2
    assert figures(cache) == (52, 3)


# -- fresh instances ---------------------------------------------------------------------


async def test_hit_is_a_fresh_detached_instance_like_a_database_read(
    db: AsyncDatabaseManager, items: Repository[Item]
) -> None:
    x = await seed(db, sku="s-1", qty=7, category="c")
    loaded = await items.get_by_id(x)  # from the database
    a = await items.get_by_id(x)
    b = await items.get_by_id(x)
    assert loaded is not None and a is not None and b is not None
    assert a is not b and a is not loaded
    for obj in (loaded, a):
        state = inspect(obj)
        assert state.detached
        assert state.key == (Item, (x,), None)
        assert not state.modified
        assert state.unloaded == set()
    columns = [attr.key for attr in inspect(Item).column_attrs]
    assert [getattr(a, k) for k in columns] == [getattr(loaded, k) for k in columns]
    a.name = "changed in memory"
    c = await items.get_by_id(x)
    assert c is not None
    assert (b.name, c.name) == ("old", "old")


@pytest.mark.requires("cache_in_transactions")
async def test_each_unit_gets_its_own_instance(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db)
    await items.get_by_id(x)
    mutated = asyncio.Event()
    read = asyncio.Event()
    seen: dict[str, Any] = {}

    async def first() -> None:
        with pytest.raises(Boom):
            async with AsyncUnitOfWork(db) as uow:
                obj = await uow.get_repository(Item, cache=cache).get_by_id(x)
                assert obj is not None
                assert inspect(obj).session is uow.session.sync_session
                seen["first"] = obj
                obj.name = "uncommitted"
                mutated.set()
                await read.wait()
                raise Boom

    async def second() -> None:
        await mutated.wait()
        async with AsyncUnitOfWork(db) as uow:
            obj = await uow.get_repository(Item, cache=cache).get_by_id(x)
            assert obj is not None
            seen["second"] = obj
            seen["second name"] = obj.name
        read.set()

    await asyncio.wait_for(run_all(first(), second()), 10)
    assert seen["first"] is not seen["second"]
    assert seen["second name"] == "old"
    again = await items.get_by_id(x)
    assert again is not None and again.name == "old"
    assert cache.stats()["hits"] == 3


async def test_same_session_gets_its_identity_map_object(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db)
    await items.get_by_id(x)
    async with AsyncUnitOfWork(db) as uow:
        repo = uow.get_repository(Item, cache=cache)
        first = await repo.get_by_id(x)
        second = await repo.get_by_id(x)
        assert first is second
        assert first in uow.session


async def test_change_to_a_cached_instance_is_written_and_audited(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db, qty=1)
    await items.get_by_id(x)
    async with AsyncUnitOfWork(db, user_id="u1") as uow:
        obj = await uow.get_repository(Item, cache=cache).get_by_id(x)
        assert obj is not None
        obj.qty = 2
    async with AsyncUnitOfWork(db, user_id="u2") as uow:
        updated = await uow.get_repository(Item, cache=cache).update(x, qty=3)
        assert updated.qty == 3
    logs = await get_audit_logs(db, table_name="t_item", entity_id=x, action="UPDATE")
    trail = [(log.user_id, log.old_values, log.new_values) for log in reversed(logs)]
    assert trail == [("u1", {"qty": 1}, {"qty": 2}), ("u2", {"qty": 2}, {"qty": 3})]
    final = await items.get_by_id(x)
    assert final is not None and final.qty == 3


# -- invalidation at commit, every write path --------------------------------------------

Write = Callable[[AsyncDatabaseManager, int], Awaitable[Any]]


async def _in_unit(
    db: AsyncDatabaseManager, fn: Callable[[AsyncUnitOfWork], Awaitable[Any]]
) -> None:
    async with AsyncUnitOfWork(db) as uow:
        await fn(uow)


async def _orm_change(db: AsyncDatabaseManager, x: int) -> None:
    async with AsyncUnitOfWork(db) as uow:
        obj = await uow.session.get(Item, x)
        assert obj is not None
        obj.name = "new"


async def _orm_dml(db: AsyncDatabaseManager, x: int) -> None:
    async with AsyncUnitOfWork(db) as uow:
        await uow.session.execute(update(Item).where(Item.id == x).values(name="new"))


async def _core_dml(db: AsyncDatabaseManager, x: int) -> None:
    table: Table = Item.__table__  # type: ignore[assignment]
    async with AsyncUnitOfWork(db) as uow:
        await uow.session.execute(update(table).where(table.c.id == x).values(name="new"))


async def _caller_session(db: AsyncDatabaseManager, x: int) -> None:
    async with db.session() as session:
        await Repository(Item, session=session).update(x, name="new")
        await session.commit()


async def _bulk_update_in_unit(db: AsyncDatabaseManager, x: int) -> None:
    async with AsyncUnitOfWork(db) as uow:
        await uow.get_repository(Item).bulk_update([{"id": x, "name": "new"}])
        await uow.get_repository(Item).create(name="other")


WRITES: dict[str, tuple[Write, str | None, bool]] = {
    # name: (write, name afterwards (None: the row is gone), soft-deleted afterwards)
    "update": (lambda db, x: Repository(Item, db).update(x, name="new"), "new", False),
    "soft delete": (lambda db, x: Repository(Item, db).delete(x), "old", True),
    "hard delete": (lambda db, x: Repository(Item, db).delete(x, soft=False), None, False),
    "upsert": (
        lambda db, x: Repository(Item, db).upsert(
            {"sku": "s-1", "name": "new"}, conflict_on=["sku"]
        ),
        "new",
        False,
    ),
    "bulk update": (
        lambda db, x: Repository(Item, db).bulk_update([{"id": x, "name": "new"}]),
        "new",
        False,
    ),
    "bulk soft delete": (lambda db, x: Repository(Item, db).bulk_delete([x]), "old", True),
    "bulk hard delete": (
        lambda db, x: Repository(Item, db).bulk_delete([x], soft=False),
        None,
        False,
    ),
    "bulk upsert": (
        lambda db, x: Repository(Item, db).bulk_upsert(
            [{"sku": "s-1", "name": "new"}], conflict_on=["sku"]
        ),
        "new",
        False,
    ),
    "repository in a unit": (
        lambda db, x: _in_unit(db, lambda uow: uow.get_repository(Item).update(x, name="new")),
        "new",
        False,
    ),
    "bulk update in a unit": (_bulk_update_in_unit, "new", False),
    "plain ORM change": (_orm_change, "new", False),
    "ORM UPDATE statement": (_orm_dml, "new", False),
    "Core UPDATE statement": (_core_dml, "new", False),
    "caller-managed session": (_caller_session, "new", False),
}


@each_case("path", list(WRITES))
async def test_every_write_path_invalidates_at_commit(db: AsyncDatabaseManager, path: str) -> None:
    write, name_after, deleted_after = WRITES[path]
    # Every path runs on the same database: each starts from an empty t_item (written
    # around the repositories, so it depends on no write path under test) and a cache of
    # its own, as a fresh database would give it.
    async with db.engine.begin() as conn:
        await conn.execute(delete(Item))
    cache = RepositoryCache(ttl=60.0)
    items = Repository(Item, db, cache=cache)
    x = await seed(db, sku="s-1")
    await items.get_by_id(x)
    assert await items.count() == 1
    assert await items.exists(name="old")
    before = cache.stats()
    await write(db, x)
    assert cache.stats()["invalidations"] > before["invalidations"]
    after = await items.get_by_id(x, with_deleted=True)
    visible = 0 if name_after is None or deleted_after else 1
    assert await items.count() == visible + (path == "bulk update in a unit")
    assert await items.exists(name="old") == (visible == 1 and name_after == "old")
    assert cache.stats()["hits"] == before["hits"]  # all three came from the database
    if name_after is None:
        assert after is None
    else:
        assert after is not None
        assert after.name == name_after
        assert (after.deleted_at is not None) is deleted_after
    assert (await items.get_by_id(x) is not None) == bool(visible)


async def test_restore_invalidates(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db)
    await Repository(Item, db).delete(x)
    assert await items.get_by_id(x) is None
    deleted = await items.get_by_id(x, with_deleted=True)
    assert deleted is not None and deleted.deleted_at is not None
    await Repository(Item, db).restore(x)
    restored = await items.get_by_id(x)
    assert restored is not None and restored.deleted_at is None


@pytest.mark.parametrize("audited", [True, False])
async def test_bulk_create_invalidates_counts(
    db: AsyncDatabaseManager, cache: RepositoryCache, audited: bool
) -> None:
    model: type[Any] = Item if audited else Counter
    rows: list[dict[str, Any]] = (
        [{"name": f"n{i}"} for i in range(3)] if audited else [{"value": i} for i in range(3)]
    )
    repo = Repository(model, db, cache=cache)
    await Repository(model, db).bulk_create(rows[:1])
    assert await repo.count() == 1
    assert await repo.count() == 1
    await Repository(model, db).bulk_create(rows[1:])
    assert await repo.count() == 3
    assert cache.stats()["hits"] == 1


async def test_create_after_a_miss_is_seen(
    db: AsyncDatabaseManager, items: Repository[Item]
) -> None:
    assert await items.get_by_id(1) is None
    assert not await items.exists(id=1)
    await Repository(Item, db).bulk_create([{"id": 1, "name": "late"}])
    late = await items.get_by_id(1)
    assert late is not None and late.name == "late"
    assert await items.exists(id=1)


async def test_manual_invalidation_and_clear(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db)
    y = await seed(db)
    await items.get_by_id(x)
    await items.get_by_id(y)
    await cache.invalidate(Item, [x])
    await items.get_by_id(x)
    await items.get_by_id(y)
    assert figures(cache) == (1, 3)
    await cache.invalidate(Item)
    await items.get_by_id(y)
    assert figures(cache) == (1, 4)
    await cache.clear()
    await items.get_by_id(y)
    assert figures(cache) == (1, 5)


# -- never before the commit, nothing on rollback ----------------------------------------


async def test_no_invalidation_before_commit(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db)
    y = await seed(db)
    await items.get_by_id(x)
    await items.get_by_id(y)
    written = asyncio.Event()
    checked = asyncio.Event()

    async def writer() -> None:
        async with AsyncUnitOfWork(db) as uow:
            await uow.get_repository(Item).update(x, name="new")
            # A bulk operation runs in a SAVEPOINT: releasing it is not the commit.
            await uow.get_repository(Item).bulk_update([{"id": y, "name": "new"}])
            written.set()
            await checked.wait()

    task = asyncio.create_task(writer())
    try:
        await asyncio.wait_for(written.wait(), 10)
        assert cache.stats()["invalidations"] == 0
        # Hits (on SQLite :memory: the writer holds the only connection).
        seen_x = await items.get_by_id(x)
        seen_y = await items.get_by_id(y)
        assert seen_x is not None and seen_y is not None
        assert (seen_x.name, seen_y.name) == ("old", "old")
        assert figures(cache) == (2, 2)
    finally:
        checked.set()
        await task
    after_x = await items.get_by_id(x)
    after_y = await items.get_by_id(y)
    assert after_x is not None and after_y is not None
    assert (after_x.name, after_y.name) == ("new", "new")


async def test_rollback_leaves_the_cache_as_it_was(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db)
    await items.get_by_id(x)
    await items.count()
    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db) as uow:
            repo = uow.get_repository(Item, cache=cache)
            await repo.update(x, name="new")
            await repo.bulk_delete([x], soft=False)
            await repo.create(name="other")
            raise Boom
    assert cache.stats()["invalidations"] == 0
    before = figures(cache)
    seen = await items.get_by_id(x)
    assert seen is not None and seen.name == "old"
    assert await items.count() == 1
    assert figures(cache) == (before[0] + 2, before[1])


@pytest.mark.requires("savepoint")
async def test_savepoint_rollback_then_commit_invalidates(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db)
    await items.get_by_id(x)
    async with AsyncUnitOfWork(db) as uow:
        with pytest.raises(Boom):
            async with uow.savepoint():
                await uow.get_repository(Item).update(x, name="undone")
                raise Boom
    # Extra invalidation is allowed; a stale value is not.
    seen = await items.get_by_id(x)
    assert seen is not None and seen.name == "old"


@pytest.mark.requires("deferred_constraints")
async def test_failed_commit_drops_what_the_transaction_wrote(
    db: AsyncDatabaseManager,
    cache: RepositoryCache,
    items: Repository[Item],
    is_postgres: bool,
) -> None:
    # A COMMIT that raised may have committed on the server (the connection can drop
    # after the server committed): the cache must not keep a value the transaction may
    # have replaced. Here a deferred constraint makes COMMIT itself fail. On SQLite the
    # failed COMMIT also leaves the transaction open on the connection: the engine must
    # roll it back before anyone reads through that connection again.
    x = await seed(db)
    await items.get_by_id(x)
    if is_postgres:
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "ALTER TABLE t_item ADD CONSTRAINT t_item_name_once UNIQUE (name) "
                    "DEFERRABLE INITIALLY DEFERRED"
                )
            )
    with pytest.raises(ConflictError):
        async with AsyncUnitOfWork(db) as uow:
            await uow.get_repository(Item).update(x, name="new")
            if is_postgres:
                await uow.get_repository(Item).create(name="new")
            else:
                await uow.session.execute(text("PRAGMA defer_foreign_keys = ON"))
                uow.session.add(Order(account_id=12345))
    assert cache.stats()["invalidations"] >= 1
    seen = await items.get_by_id(x)
    assert seen is not None and seen.name == "old"


async def test_disposed_manager_is_an_error_even_on_a_hit(
    db_url: str, backend: str, cache: RepositoryCache
) -> None:
    manager = manager_for(db_url)
    await manager.connect()
    try:
        await reset_schema(manager)
        items = Repository(Item, manager, cache=cache)
        x = await seed(manager)
        await items.get_by_id(x)
        await items.count()
        assert await items.get_by_id(x) is not None
    finally:
        await manager.dispose()
    with pytest.raises(StateError):
        await items.get_by_id(x)
    with pytest.raises(StateError):
        await items.count()


# -- transactions that must not use the cache --------------------------------------------


async def test_unit_that_wrote_the_model_reads_its_own_writes(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db)
    await items.get_by_id(x)
    await items.count()
    async with AsyncUnitOfWork(db) as uow:
        repo = uow.get_repository(Item, cache=cache)
        await uow.session.execute(update(Item).where(Item.id == x).values(name="mine"))
        mine = await repo.get_by_id(x)
        assert mine is not None and mine.name == "mine"
        uow.session.add(Item(name="pending"))
        assert await repo.count() == 2  # autoflushed, not the cached 1
    assert cache.stats()["bypasses"] == 2
    after = await items.get_by_id(x)
    assert after is not None and after.name == "mine"


async def test_snapshot_transactions_bypass_the_cache(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item], backend: str
) -> None:
    x = await seed(db)
    await items.get_by_id(x)
    server = backend in ("postgres", "mariadb")
    options: dict[str, Any] = (
        {"isolation_level": "REPEATABLE READ"} if server else {"read_only": True}
    )
    async with AsyncUnitOfWork(db, **options) as uow:
        repo = uow.get_repository(Item, cache=cache)
        await repo.count()  # the snapshot starts here
        assert await repo.get_by_id(x) is not None
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["bypasses"]) == (0, 1, 2)


@pytest.mark.requires("cache_in_transactions")
async def test_write_unit_uses_the_cache(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db)
    y = await seed(db)
    await items.get_by_id(x)
    async with AsyncUnitOfWork(db) as uow:
        repo = uow.get_repository(Item, cache=cache)
        await uow.get_repository(Counter).create(id=1)  # a transaction is open
        assert await repo.get_by_id(x) is not None  # a hit
        assert await repo.get_by_id(y) is not None  # a miss, stored
    assert await items.get_by_id(y) is not None
    assert figures(cache) == (2, 2)


# -- soft delete, TTL, LRU ---------------------------------------------------------------


@pytest.mark.requires("cache_in_transactions")
async def test_soft_deleted_row_is_not_served_without_with_deleted(
    db: AsyncDatabaseManager, cache: RepositoryCache, items: Repository[Item]
) -> None:
    x = await seed(db)
    await Repository(Item, db).delete(x)
    deleted = await items.get_by_id(x, with_deleted=True)
    assert deleted is not None and deleted.deleted_at is not None
    assert await items.get_by_id(x) is None
    with pytest.raises(NotFoundError):
        await items.get(x)
    again = await items.get_by_id(x, with_deleted=True)
    assert again is not None
    async with AsyncUnitOfWork(db) as uow:
        repo = uow.get_repository(Item, cache=cache)
        assert await repo.get_by_id(x) is None
        assert await repo.get_by_id(x, with_deleted=True) is not None
    assert figures(cache) == (5, 1)


async def test_entries_expire_after_ttl(db: AsyncDatabaseManager) -> None:
    now = [1000.0]
    cache = RepositoryCache(ttl=10.0, clock=lambda: now[0])
    items = Repository(Item, db, cache=cache)
    x = await seed(db)
    await items.get_by_id(x)
    now[0] += 9.9
    await items.get_by_id(x)
    assert figures(cache) == (1, 1)
    now[0] += 0.2
    await items.get_by_id(x)
    assert figures(cache) == (1, 2)
    assert cache.stats()["expirations"] == 1


async def test_lru_keeps_max_entries(db: AsyncDatabaseManager) -> None:
    cache = RepositoryCache(max_entries=3)
    items = Repository(Item, db, cache=cache)
    ids = [await seed(db) for _ in range(5)]
    for i in ids[:3]:
        await items.get_by_id(i)
    await items.get_by_id(ids[0])  # now the most recently used
    await items.get_by_id(ids[3])  # evicts ids[1]
    await items.get_by_id(ids[4])  # evicts ids[2]
    stats = cache.stats()
    assert (stats["size"], stats["evictions"]) == (3, 2)
    assert figures(cache) == (1, 5)
    await items.get_by_id(ids[0])
    await items.get_by_id(ids[1])
    assert figures(cache) == (2, 6)


# -- races -------------------------------------------------------------------------------


async def run_all(*coros: Awaitable[Any]) -> None:
    """gather(), but a failure cancels the others (they would hold connections)."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class PausingBackend(MemoryCacheBackend):
    """Stops the first store until told to go on: a reader caught between its database
    read and its store."""

    def __init__(self) -> None:
        super().__init__()
        self.reached = asyncio.Event()
        self.proceed = asyncio.Event()
        self.paused = False

    async def store(
        self,
        namespace: str,
        key: Hashable,
        values: Mapping[str, Any],
        token: object,
        ttl: float | None,
    ) -> bool:
        if not self.paused:
            self.paused = True
            self.reached.set()
            await self.proceed.wait()
        return await super().store(namespace, key, values, token, ttl)


class NetworkLikeBackend(MemoryCacheBackend):
    """Awaits I/O inside invalidate() and clear(), as a shared store's client would."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def invalidate(self, namespace: str, keys: Iterable[Hashable] | None) -> None:
        await_only(asyncio.sleep(0))
        self.calls += 1
        super().invalidate(namespace, keys)

    def clear(self) -> None:
        await_only(asyncio.sleep(0))
        self.calls += 1
        super().clear()


async def test_a_backend_may_await_while_invalidating(db: AsyncDatabaseManager) -> None:
    store = NetworkLikeBackend()
    cache = RepositoryCache(backend=store)
    items = Repository(Item, db, cache=cache)
    x = await seed(db)
    await items.get_by_id(x)
    await Repository(Item, db).update(x, name="new")  # invalidate() runs in the commit
    assert store.calls == 2  # the row, and the model's counts
    seen = await items.get_by_id(x)
    assert seen is not None and seen.name == "new"
    await cache.invalidate(Item, [x])
    await cache.clear()
    assert store.calls == 5


async def test_slow_reader_cannot_store_a_value_replaced_meanwhile(
    db: AsyncDatabaseManager, backend: str
) -> None:
    if backend == "sqlite-memory":
        pytest.skip("one connection: a writer cannot commit while a reader holds it")
    store = PausingBackend()
    cache = RepositoryCache(backend=store)
    items = Repository(Item, db, cache=cache)
    x = await seed(db)
    reader = asyncio.create_task(items.get_by_id(x))
    try:
        # The reader has read "old" and is about to store it.
        await asyncio.wait_for(store.reached.wait(), 10)
        await Repository(Item, db).update(x, name="new")
    finally:
        store.proceed.set()
    stale = await reader
    assert stale is not None and stale.name == "old"  # its read began before the commit
    assert cache.stats()["stale_stores_refused"] == 1
    fresh = await items.get_by_id(x)
    assert fresh is not None and fresh.name == "new"


@pytest.mark.slow
async def test_readers_never_see_a_value_older_than_the_last_commit(
    db: AsyncDatabaseManager, cache: RepositoryCache
) -> None:
    writes, readers, reads_per_commit = 400, 6, 4
    await Repository(Counter, db).create(id=1, value=0)
    counters = Repository(Counter, db, cache=cache)
    committed = 0
    committed_event = asyncio.Event()
    done = False
    reads = 0

    async def writer() -> None:
        nonlocal committed, committed_event, done
        for n in range(1, writes + 1):
            if n % 2:
                await Repository(Counter, db).update(1, value=n)
            else:
                async with AsyncUnitOfWork(db) as uow:
                    row = await uow.session.get(Counter, 1)
                    assert row is not None
                    row.value = n
            committed = n  # the commit has returned
            committed_event.set()
            committed_event = asyncio.Event()
        done = True
        committed_event.set()

    async def read(index: int) -> None:
        nonlocal reads
        floor = committed
        if index == 0 and reads % 4 == 0:
            async with AsyncUnitOfWork(db) as uow:
                row = await uow.get_repository(Counter, cache=cache).get_by_id(1)
        else:
            row = await counters.get_by_id(1)
        assert row is not None
        assert row.value >= floor, f"read {row.value} after {floor} was committed"
        reads += 1

    async def reader(index: int) -> None:
        # A few reads after each commit, overlapping the next write: misses, database
        # reads and stores interleave with commits in whatever order the loop produces.
        while not done:
            next_commit = committed_event
            for _ in range(reads_per_commit):
                await read(index)
                await asyncio.sleep(0)
            await next_commit.wait()

    await run_all(writer(), *(reader(i) for i in range(readers)))
    final = await counters.get_by_id(1)
    assert final is not None and final.value == writes
    stats = cache.stats()
    assert reads >= 2 * writes
    assert stats["misses"] >= writes // 2
    assert stats["invalidations"] >= writes
