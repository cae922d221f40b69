"""A standalone ``get_by_id`` runs a statement built once per model, not ``Session.get``.

Behaviour must not change: one statement, soft-deleted rows invisible unless
``with_deleted``, the same instance as ``Session.get`` loads (values, types, eager
loaders, load events, detached with its identity), hostile ids refused before SQL,
errors translated, metrics counted, the cache path (hits and misses) untouched, and a
unit of work's identity map still answering without SQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import ForeignKey, Integer, String, event, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from asyncdb import (
    AsyncDatabaseManager,
    AsyncDBError,
    AsyncUnitOfWork,
    Repository,
    RepositoryCache,
    ValidationError,
)
from asyncdb._repository_base import _BY_ID
from tests.integration.models import Account, Color, Counter, Item, Order
from tests.integration.test_repository import counting


class _Own(DeclarativeBase):
    """Tables of this module only (created and dropped by the fixture below)."""


class Pair(_Own):
    __tablename__ = "t_reads_pair"
    a: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    b: Mapped[str] = mapped_column(String(20), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class Shelf(_Own):
    __tablename__ = "t_reads_shelf"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    books: Mapped[list[Book]] = relationship(lazy="selectin", order_by="Book.id")


class Book(_Own):
    __tablename__ = "t_reads_book"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shelf_id: Mapped[int] = mapped_column(ForeignKey("t_reads_shelf.id"))


class Missing(_Own):
    """Mapped, but its table is never created."""

    __tablename__ = "t_reads_missing"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)


LOADED: list[Any] = []


@event.listens_for(Pair, "load")
def _on_load(target: Pair, context: Any) -> None:
    LOADED.append(target)


@pytest.fixture
async def own_tables(db: AsyncDatabaseManager) -> AsyncIterator[None]:
    tables = [Pair.__table__, Shelf.__table__, Book.__table__]
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda c: _Own.metadata.create_all(c, tables=tables))
    try:
        yield
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: _Own.metadata.drop_all(c, tables=tables))


def _values(obj: Any) -> dict[str, Any]:
    return {attr.key: getattr(obj, attr.key) for attr in inspect(type(obj)).column_attrs}


async def _via_session_get(db: AsyncDatabaseManager, model: type[Any], ident: Any) -> Any:
    """What ``Session.get`` loads (a repository bound to a caller's session uses it)."""
    async with db.autocommit_session() as session:
        return await Repository(model, session=session).get_by_id(ident, with_deleted=True)


async def test_one_statement_and_soft_delete_in_sql(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    keep = await items.create(name="keep")
    gone = await items.create(name="gone")
    await items.delete(gone.id)
    with counting(db) as seen:
        assert (await items.get_by_id(keep.id)).name == "keep"  # type: ignore[union-attr]
        assert await items.get_by_id(gone.id) is None
        found = await items.get_by_id(gone.id, with_deleted=True)
        assert found is not None and found.deleted_at is not None
        assert await items.get_by_id(gone.id + 100, with_deleted=True) is None
    assert len(seen) == 4
    assert seen[0] == seen[1] and "deleted_at IS NULL" in seen[0]
    assert seen[2] == seen[3] and "deleted_at" not in seen[2].split("WHERE")[1]
    # Built once per model and variant, shared by every repository of the model.
    assert set(_BY_ID[Item]) == {False, True}
    again = Repository(Item, db)
    await again.get_by_id(keep.id)
    assert len(_BY_ID[Item]) == 2


async def test_same_instance_as_session_get(db: AsyncDatabaseManager) -> None:
    account = await Repository(Account, db).create(email="a@example.com")
    orders = Repository(Order, db)
    order = await orders.create(account_id=account.id, color=Color.BLUE, blob=b"\x00\xff")
    mine = await orders.get_by_id(order.id)
    theirs = await _via_session_get(db, Order, order.id)
    assert mine is not None and _values(mine) == _values(theirs)
    assert mine.color is Color.BLUE and mine.blob == b"\x00\xff"
    state = inspect(mine)
    assert state.detached and state.key == inspect(theirs).key
    assert not state.expired_attributes and not state.modified


async def test_composite_key_eager_loader_and_load_event(
    db: AsyncDatabaseManager, own_tables: None
) -> None:
    pairs = Repository(Pair, db)
    await pairs.create(a=1, b="x", value=5)
    await pairs.create(a=1, b="y", value=6)
    LOADED.clear()
    with counting(db) as seen:
        assert (await pairs.get_by_id((1, "y"))).value == 6  # type: ignore[union-attr]
        assert (await pairs.get_by_id({"b": "x", "a": 1})).value == 5  # type: ignore[union-attr]
        assert await pairs.get_by_id((2, "x")) is None
    assert len(seen) == 3
    assert [p.b for p in LOADED] == ["y", "x"]  # the ORM's load event fired, as before
    with counting(db) as seen, pytest.raises(ValidationError, match="composite key"):
        await pairs.get_by_id(1)
    assert seen == []

    shelves = Repository(Shelf, db)
    await shelves.create(id=1)
    await Repository(Book, db).bulk_create([{"id": 2, "shelf_id": 1}, {"id": 1, "shelf_id": 1}])
    shelf = await shelves.get_by_id(1)
    # lazy="selectin" loads the books in the same call, as Session.get does.
    assert shelf is not None and [b.id for b in shelf.books] == [1, 2]


async def test_hostile_ids_refused_before_sql(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    with counting(db) as seen:
        for bad in ("1; drop table t_item", None, True, [1], {"id": 1}, 2**70, 1.5):
            with pytest.raises(ValidationError):
                await items.get_by_id(bad)
    assert seen == []


async def test_errors_translated_as_before(db: AsyncDatabaseManager) -> None:
    with pytest.raises(AsyncDBError) as standalone:
        await Repository(Missing, db).get_by_id(1)
    with pytest.raises(AsyncDBError) as bound:
        await _via_session_get(db, Missing, 1)
    assert type(standalone.value) is type(bound.value)


async def test_metrics_count_the_statement(db: AsyncDatabaseManager) -> None:
    counters = Repository(Counter, db)
    await counters.create(id=1, value=1)
    before = db.metrics.snapshot()["queries"]["total"]
    checkouts = db.metrics.checkouts
    for _ in range(3):
        assert await counters.get_by_id(1) is not None
    assert db.metrics.snapshot()["queries"]["total"] == before + 3
    assert db.metrics.checkouts == checkouts + 3


async def test_cache_hits_and_misses_unchanged(db: AsyncDatabaseManager) -> None:
    cache = RepositoryCache()
    items = Repository(Item, db, cache=cache)
    item = await items.create(name="a")
    gone = await items.create(name="b")
    await items.delete(gone.id)
    with counting(db) as seen:
        assert await items.get_by_id(item.id) is not None  # miss: read, stored
        assert await items.get_by_id(item.id) is not None  # hit: no SQL
        assert await items.get_by_id(gone.id) is None  # miss: the deleted row is stored
        assert await items.get_by_id(gone.id, with_deleted=True) is not None  # hit
    assert len(seen) == 2
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["stores"]) == (2, 2, 2)


async def test_inside_a_unit_the_identity_map_answers(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    item = await items.create(name="a")
    async with AsyncUnitOfWork(db) as uow:
        repo = uow.get_repository(Item)
        first = await repo.get_by_id(item.id)
        assert first is not None
        first.name = "changed"
        with counting(db) as seen:
            again = await repo.get_by_id(item.id)
        assert again is first and again.name == "changed"
        assert seen == []
        await uow.rollback()
