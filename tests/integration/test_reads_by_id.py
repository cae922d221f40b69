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
from sqlalchemy import Column, ForeignKey, Integer, String, event, inspect, text
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    column_property,
    deferred,
    mapped_column,
    relationship,
    with_loader_criteria,
)
from sqlalchemy.orm.exc import DetachedInstanceError

from asyncdb import (
    AsyncDatabaseManager,
    AsyncDBError,
    AsyncUnitOfWork,
    Repository,
    RepositoryCache,
    ValidationError,
)
from asyncdb._plain_load import plain_loader
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
    shelf: Mapped[Shelf] = relationship(lazy="select", viewonly=True)


class Sketch(_Own):
    """Not plain: a deferred column and a column_property the ORM computes."""

    __tablename__ = "t_reads_sketch"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = deferred(mapped_column(String(200)))
    shout: Mapped[str] = column_property(title + "!")


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
    tables = [Pair.__table__, Shelf.__table__, Book.__table__, Sketch.__table__]
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
    # Built once per model and variant, shared by every repository of the model (Item is
    # plain: its Core form, see test_plain_models_skip_the_orm).
    loader = plain_loader(inspect(Item))
    assert loader is not None and set(loader.by_id) == {False, True}
    again = Repository(Item, db)
    await again.get_by_id(keep.id)
    assert len(loader.by_id) == 2


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


async def test_plain_models_skip_the_orm(
    db: AsyncDatabaseManager, own_tables: None, plain_built: list[Any]
) -> None:
    """A plain model is read without a session; every other model still by the ORM."""
    assert plain_loader(inspect(Item)) is not None
    for not_plain in (Sketch, Shelf):  # deferred + column_property; an eager relationship
        assert plain_loader(inspect(not_plain)) is None
    item = await Repository(Item, db).create(name="a")
    found = await Repository(Item, db).get_by_id(item.id)
    assert plain_built == [found]

    plain_built.clear()
    await Repository(Sketch, db).create(id=1, title="hi", body="long")
    sketch = await Repository(Sketch, db).get_by_id(1)
    assert sketch is not None and sketch.shout == "hi!"
    assert "body" not in inspect(sketch).dict  # deferred, as the ORM leaves it
    await Repository(Pair, db).create(a=1, b="x")  # plain, but a load listener
    LOADED.clear()
    assert await Repository(Pair, db).get_by_id((1, "x")) is not None
    assert len(LOADED) == 1
    assert plain_built == []


async def test_plain_instance_behaves_as_the_orms(
    db: AsyncDatabaseManager, own_tables: None, plain_built: list[Any]
) -> None:
    """The same detached state: lazy loads refused alike; re-attached, it lazy-loads,
    and a change to it is committed."""
    await Repository(Shelf, db).create(id=1)
    books = Repository(Book, db)
    await books.create(id=7, shelf_id=1)
    mine = await books.get_by_id(7)
    theirs = await _via_session_get(db, Book, 7)
    assert plain_built == [mine]
    assert mine is not None and _values(mine) == _values(theirs)
    for obj in (mine, theirs):
        state = inspect(obj)
        assert state.detached and not state.expired_attributes and not state.modified
        assert state.key == inspect(theirs).key
        assert set(state.unloaded) == {"shelf"}
    with pytest.raises(DetachedInstanceError) as from_orm:
        _ = theirs.shelf
    with pytest.raises(DetachedInstanceError) as from_plain:
        _ = mine.shelf
    assert str(from_plain.value) == str(from_orm.value).replace(hex(id(theirs)), hex(id(mine)))

    await Repository(Shelf, db).bulk_create([{"id": 2}, {"id": 3}])
    async with AsyncUnitOfWork(db) as uow:
        attached = await uow.session.merge(mine, load=False)
        shelf = await uow.session.run_sync(lambda _: attached.shelf)  # a lazy load
        assert attached is not mine and shelf.id == 1
        attached.shelf_id = 2
    assert (await books.get_by_id(7)).shelf_id == 2  # type: ignore[union-attr]
    async with AsyncUnitOfWork(db) as uow:
        uow.session.add(mine)  # the instance itself, re-attached
        mine.shelf_id = 3
    assert (await books.get_by_id(7)).shelf_id == 3  # type: ignore[union-attr]


async def test_a_session_listener_keeps_the_orm_path(
    db: AsyncDatabaseManager, plain_built: list[Any]
) -> None:
    """Global criteria added by ``do_orm_execute`` (tenancy, say) still apply, and a
    ``loaded_as_persistent`` listener still sees the load."""
    items = Repository(Item, db)
    hidden = await items.create(name="hidden")
    shown = await items.create(name="shown")

    def only_shown(state: Any) -> None:
        if state.is_select:
            state.statement = state.statement.options(
                with_loader_criteria(Item, Item.name == "shown")
            )

    seen: list[Any] = []

    def loaded(session: Any, instance: Any) -> None:
        seen.append(instance)

    event.listen(Session, "do_orm_execute", only_shown)
    try:
        assert await items.get_by_id(hidden.id) is None
        assert await items.get_by_id(shown.id) is not None
    finally:
        event.remove(Session, "do_orm_execute", only_shown)
    event.listen(Session, "loaded_as_persistent", loaded)
    try:
        assert await items.get_by_id(shown.id) is not None
    finally:
        event.remove(Session, "loaded_as_persistent", loaded)
    assert len(seen) == 1 and plain_built == []
    assert await items.get_by_id(hidden.id) is not None  # listeners gone: plain again
    assert len(plain_built) == 1


@pytest.mark.requires("savepoint")
async def test_reads_of_a_bound_manager_join_its_connection(
    db: AsyncDatabaseManager, plain_built: list[Any]
) -> None:
    """Under ``bind_sessions_to`` a read sees the connection's uncommitted rows."""
    items = Repository(Item, db)
    async with db.engine.connect() as conn:
        await conn.begin()
        with db.bind_sessions_to(conn):
            item = await items.create(name="uncommitted")
            assert (await items.get_by_id(item.id)) is not None
        await conn.rollback()
    assert plain_built == []
    assert await items.get_by_id(item.id) is None


async def test_a_broken_connection_is_read_again(postgres_url: str) -> None:
    """A pooled connection the server ended is replaced and the read repeated once."""
    from tests.integration.conftest import manager_for
    from tests.integration.test_manager import _terminate_pool_backends

    db = manager_for(postgres_url, pool_size=1, max_overflow=0, pre_ping=False)
    async with db:
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: Item.__table__.create(c, checkfirst=True))
        try:
            items = Repository(Item, db)
            item = await items.create(name="a")
            await _terminate_pool_backends(db, postgres_url)
            found = await items.get_by_id(item.id)
            assert found is not None and found.name == "a"
        finally:
            async with db.engine.begin() as conn:
                await conn.run_sync(lambda c: Item.__table__.drop(c))


async def test_a_column_mapped_later_is_read(db: AsyncDatabaseManager) -> None:
    """A mapper that gains a column after its first read gets a new loader and new
    statements (the old ones would bring rows of the old width)."""

    class Late(DeclarativeBase):
        pass

    class Grows(Late):
        __tablename__ = "t_reads_grows"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        name: Mapped[str] = mapped_column(String(20))

    async with db.engine.begin() as conn:
        await conn.run_sync(Late.metadata.create_all)
    try:
        repo = Repository(Grows, db)
        await repo.create(id=1, name="a")
        assert (await repo.get_by_id(1)) is not None
        assert (await repo.paginate()).total == 1
        async with db.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE t_reads_grows ADD COLUMN extra INTEGER"))
            await conn.execute(text("UPDATE t_reads_grows SET extra = 7"))
        Grows.extra = Column(Integer)  # type: ignore[attr-defined]
        found = await Repository(Grows, db).get_by_id(1)
        page = await Repository(Grows, db).paginate()
        assert found is not None and found.extra == 7  # type: ignore[attr-defined]
        assert [g.extra for g in page.items] == [7]  # type: ignore[attr-defined]
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(Late.metadata.drop_all)
