"""Repository[T] on every backend: CRUD, soft delete, filters, pagination, bulk, upsert."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    Repository,
    ValidationError,
)
from tests.cases import each_case
from tests.integration.models import Account, Counter, Item, Kind, Order


@contextmanager
def counting(db: AsyncDatabaseManager) -> Iterator[list[str]]:
    """Statements sent to the database (transaction control excluded)."""
    seen: list[str] = []
    skip = ("BEGIN", "SAVEPOINT", "RELEASE", "ROLLBACK", "COMMIT")

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(skip):
            seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", listener)


@pytest.fixture
def items(db: AsyncDatabaseManager) -> Repository[Item]:
    return Repository(Item, db)


# -- CRUD --------------------------------------------------------------------------------


async def test_create_from_values_and_instance(items: Repository[Item]) -> None:
    a = await items.create(name="a", qty=2)
    b = await items.create(Item(name="b"))
    assert a.id is not None and b.id is not None
    assert a.created_at.tzinfo is not None
    assert (await items.get(a.id)).name == "a"
    assert (await items.get(b.id)).qty == 0


async def test_create_rejects_bad_input_before_sql(
    db: AsyncDatabaseManager, items: Repository[Item]
) -> None:
    with counting(db) as seen:
        with pytest.raises(ValidationError, match="Unknown field 'nope'"):
            await items.create(name="x", nope=1)
        with pytest.raises(ValidationError, match="not both"):
            await items.create(Item(name="x"), name="y")
        with pytest.raises(ValidationError, match="Item instance"):
            await items.create(Counter())  # type: ignore[arg-type]
    assert seen == []


async def test_missing_required_column_is_validation_error(items: Repository[Item]) -> None:
    with pytest.raises(ValidationError, match="required column"):
        await items.create(qty=1)
    assert await items.count() == 0


async def test_duplicate_unique_value_is_conflict(items: Repository[Item]) -> None:
    import traceback
    import uuid

    secret = uuid.uuid4().hex  # a value that appears in no source line of a traceback
    await items.create(name="a", sku=secret)
    with pytest.raises(ConflictError) as info:
        await items.create(name="b", sku=secret)
    assert secret not in str(info.value)
    # nor anywhere in the chained driver errors a traceback or log would print
    assert secret not in "".join(traceback.format_exception(info.value))
    assert await items.count() == 1


async def test_foreign_key_violation_is_conflict(db: AsyncDatabaseManager) -> None:
    orders = Repository(Order, db)
    with pytest.raises(ConflictError, match="foreign-key"):
        await orders.create(account_id=999)


async def test_get_by_id_and_get(items: Repository[Item]) -> None:
    item = await items.create(name="a")
    assert (await items.get_by_id(item.id)) is not None
    assert await items.get_by_id(item.id + 100) is None
    with pytest.raises(NotFoundError, match="No Item with id"):
        await items.get(item.id + 100)
    with pytest.raises(ValidationError, match="id must be an integer"):
        await items.get_by_id("1; drop table t_item")


async def test_get_all_orders_limits_and_offsets(items: Repository[Item]) -> None:
    for name, qty in [("c", 1), ("a", 3), ("b", 2)]:
        await items.create(name=name, qty=qty)
    assert [i.name for i in await items.get_all()] == ["c", "a", "b"]
    assert [i.name for i in await items.get_all(order_by="name")] == ["a", "b", "c"]
    assert [i.name for i in await items.get_all(order_by="-qty", limit=2)] == ["a", "b"]
    assert [i.name for i in await items.get_all(order_by=["name"], offset=1)] == ["b", "c"]
    with pytest.raises(ValidationError):
        await items.get_all(limit=-1)


async def test_update(items: Repository[Item]) -> None:
    item = await items.create(name="a", qty=1)
    before = item.updated_at
    updated = await items.update(item.id, name="b", qty=5)
    assert (updated.name, updated.qty) == ("b", 5)
    assert updated.updated_at >= before
    assert (await items.get(item.id)).name == "b"
    with pytest.raises(NotFoundError):
        await items.update(item.id + 1, name="x")
    with pytest.raises(ValidationError, match="primary key"):
        await items.update(item.id, id=99)
    with pytest.raises(ValidationError, match="Unknown field"):
        await items.update(item.id, bogus=1)


async def test_statement_counts(db: AsyncDatabaseManager) -> None:
    plain = Repository(Counter, db)
    row = await plain.create(id=1, value=0)
    with counting(db) as seen:
        await plain.get_by_id(row.id)
    assert len(seen) == 1
    with counting(db) as seen:
        await plain.update(row.id, value=2)
    assert len(seen) <= 2
    audited = Repository(Item, db)
    item = await audited.create(name="a")
    with counting(db) as seen:
        await audited.update(item.id, name="b")
    writes = [s for s in seen if "asyncdb_audit_log" not in s]
    assert len(writes) <= 2
    with counting(db) as seen:
        await plain.bulk_create(({"id": i, "value": i} for i in range(10, 2010)), batch_size=500)
    assert len(seen) <= 2000 // 500 * 2


# -- soft delete ---------------------------------------------------------------------------


async def test_soft_delete_hides_rows_from_every_read(items: Repository[Item]) -> None:
    keep = await items.create(name="keep", qty=1)
    gone = await items.create(name="gone", qty=1)
    await items.delete(gone.id)
    assert await items.get_by_id(gone.id) is None
    assert (await items.get_by_id(gone.id, with_deleted=True)) is not None
    with pytest.raises(NotFoundError):
        await items.get(gone.id)
    assert [i.id for i in await items.get_all()] == [keep.id]
    assert len(await items.get_all(with_deleted=True)) == 2
    assert [i.id for i in await items.find_by(qty=1)] == [keep.id]
    assert await items.find_one_by(name="gone") is None
    assert await items.count() == 1
    assert await items.count(with_deleted=True) == 2
    assert not await items.exists(name="gone")
    assert await items.exists(name="gone", with_deleted=True)
    assert (await items.paginate()).total == 1
    assert len((await items.paginate_keyset()).items) == 1
    with pytest.raises(NotFoundError):
        await items.update(gone.id, name="x")
    with pytest.raises(NotFoundError):
        await items.delete(gone.id)


async def test_restore(items: Repository[Item]) -> None:
    item = await items.create(name="a")
    with pytest.raises(ValidationError, match="not deleted"):
        await items.restore(item.id)
    await items.delete(item.id)
    restored = await items.restore(item.id)
    assert restored.deleted_at is None
    assert await items.get_by_id(item.id) is not None
    with pytest.raises(NotFoundError):
        await items.restore(item.id + 5)


async def test_hard_delete(db: AsyncDatabaseManager, items: Repository[Item]) -> None:
    item = await items.create(name="a")
    await items.delete(item.id, soft=False)
    assert await items.get_by_id(item.id, with_deleted=True) is None
    counters = Repository(Counter, db)
    row = await counters.create(id=1)
    with pytest.raises(ValidationError, match="cannot be soft-deleted"):
        await counters.delete(row.id, soft=True)
    await counters.delete(row.id)  # hard by default without deleted_at
    assert await counters.count() == 0
    with pytest.raises(ValidationError, match="nothing to restore"):
        await counters.restore(row.id)


# -- filters ---------------------------------------------------------------------------------


async def test_filter_operators(items: Repository[Item]) -> None:
    for i in range(6):
        await items.create(name=f"n{i}", qty=i, category=None if i % 2 else "even")

    async def ids(**filters: Any) -> list[int]:
        return [i.qty for i in await items.find_by(order_by="qty", **filters)]

    assert await ids(qty=3) == [3]
    assert await ids(qty__ne=3) == [0, 1, 2, 4, 5]
    assert await ids(qty__lt=2) == [0, 1]
    assert await ids(qty__lte=2) == [0, 1, 2]
    assert await ids(qty__gt=3) == [4, 5]
    assert await ids(qty__gte=3) == [3, 4, 5]
    assert await ids(qty__in=[1, 4]) == [1, 4]
    assert await ids(qty__not_in=[1, 4]) == [0, 2, 3, 5]
    assert await ids(name__like="n1%") == [1]
    assert await ids(name__ilike="N2") == [2]
    assert await ids(category__is_null=True) == [1, 3, 5]
    assert await ids(category__is_null=False) == [0, 2, 4]
    assert await ids(category=None) == [1, 3, 5]
    assert await ids(qty__gte=1, category="even") == [2, 4]
    assert await items.count(qty__in=[]) == 0
    first = await items.find_one_by(order_by="-qty")
    assert first is not None and first.qty == 5


@each_case(
    "filters",
    [
        {"metadata": 1},
        {"__class__": 1},
        {"password; drop table t_item": 1},
        {"name__regex": "x"},
        {"name__": "x"},
        {"registry": 1},
        {"qty__in": "123"},
        {"qty__is_null": "yes"},
        {"name__like": 5},
    ],
)
async def test_hostile_filters_fail_before_sql(
    db: AsyncDatabaseManager, items: Repository[Item], filters: dict[str, Any]
) -> None:
    with counting(db) as seen:
        with pytest.raises(ValidationError):
            await items.find_by(**filters)
        with pytest.raises(ValidationError):
            await items.count(**filters)
        with pytest.raises(ValidationError):
            await items.exists(**filters)
    assert seen == []


@each_case("order", ["metadata", "-__class__", "name desc", ["name", "--qty"], [""]])
async def test_hostile_order_by_fails_before_sql(
    db: AsyncDatabaseManager, items: Repository[Item], order: Any
) -> None:
    with counting(db) as seen, pytest.raises(ValidationError):
        await items.get_all(order_by=order)
    assert seen == []


async def test_exists_sends_exists_not_count(
    db: AsyncDatabaseManager, items: Repository[Item]
) -> None:
    await items.create(name="a")
    with counting(db) as seen:
        assert await items.exists(name="a")
        assert not await items.exists(name="b")
    assert all("EXISTS" in s.upper() and "COUNT(" not in s.upper() for s in seen)


# -- pagination --------------------------------------------------------------------------------


async def test_paginate(db: AsyncDatabaseManager, items: Repository[Item]) -> None:
    await items.bulk_create({"name": f"n{i:03d}", "qty": i % 3} for i in range(23))
    page = await items.paginate(page=1, page_size=10, order_by="name")
    assert (page.total, page.pages, page.has_next, page.has_previous) == (23, 3, True, False)
    assert [i.name for i in page.items] == [f"n{i:03d}" for i in range(10)]
    last = await items.paginate(page=3, page_size=10, order_by="name")
    assert [i.name for i in last.items] == ["n020", "n021", "n022"]
    assert not last.has_next
    beyond = await items.paginate(page=9, page_size=10)
    assert beyond.items == [] and beyond.total == 23
    filtered = await items.paginate(page=1, page_size=5, qty=0)
    assert filtered.total == 8
    empty = await items.paginate(name="none")
    assert (empty.total, empty.pages, empty.has_next) == (0, 0, False)
    for bad in ({"page": -1}, {"page": 0}, {"page_size": 0}, {"page_size": 10_000}):
        with pytest.raises(ValidationError):
            await items.paginate(**bad)
    small = Repository(Item, db, max_page_size=5)
    with pytest.raises(ValidationError, match="between 1 and 5"):
        await small.paginate(page_size=6)


async def test_keyset_walk_with_many_equal_values_returns_each_row_once(
    items: Repository[Item],
) -> None:
    await items.bulk_create(
        {"name": f"n{i}", "qty": i % 7, "category": None if i % 5 == 0 else f"c{i % 3}"}
        for i in range(200)  # runs of about 29 equal qty values, longer than a page
    )
    for order in (["qty"], ["-qty"], ["category", "-qty"], ["-category"], None):
        seen: list[int] = []
        cursor = None
        while True:
            page = await items.paginate_keyset(after=cursor, limit=23, order_by=order)
            seen.extend(i.id for i in page.items)
            if not page.has_more:
                assert page.next_cursor is None
                break
            cursor = page.next_cursor
        assert len(seen) == 200, order
        assert len(set(seen)) == 200, order


async def test_keyset_cursor_tampering_and_foreign_cursors(
    db: AsyncDatabaseManager, items: Repository[Item]
) -> None:
    await items.bulk_create({"name": f"n{i}", "qty": i} for i in range(10))
    page = await items.paginate_keyset(limit=3, order_by="qty")
    cursor = page.next_cursor
    assert cursor is not None
    flipped = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    for bad in (flipped, "garbage", "", "x" * 5000, cursor + "=="[:0] + "AAAA"):
        with pytest.raises(ValidationError, match="cursor is invalid"):
            await items.paginate_keyset(after=bad, limit=3, order_by="qty")
    with pytest.raises(ValidationError, match="cursor is invalid"):
        await items.paginate_keyset(after=cursor, limit=3, order_by="name")
    kinds = Repository(Kind, db)
    with pytest.raises(ValidationError, match="cursor is invalid"):
        await kinds.paginate_keyset(after=cursor, limit=3, order_by="qty" if False else None)
    nxt = await items.paginate_keyset(after=cursor, limit=3, order_by="qty")
    assert [i.qty for i in nxt.items] == [3, 4, 5]


# -- bulk ------------------------------------------------------------------------------------


async def test_bulk_create_streams_a_generator(items: Repository[Item]) -> None:
    produced = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal produced
        for i in range(250):
            produced += 1
            yield {"name": f"r{i}", "qty": i}

    assert await items.bulk_create(rows(), batch_size=100) == 250
    assert produced == 250
    assert await items.count() == 250
    first = await items.find_one_by(name="r0")
    assert first is not None and first.created_at is not None and first.updated_at is not None


@pytest.mark.requires("savepoint")
async def test_bulk_create_is_atomic_and_names_the_bad_row(items: Repository[Item]) -> None:
    await items.create(name="existing", sku="DUP")
    rows = [{"name": f"r{i}"} for i in range(150)]
    rows[123]["sku"] = "DUP"
    for r in rows:
        r.setdefault("sku", None)
    with pytest.raises(ConflictError, match=r"Row 123\b"):
        await items.bulk_create(rows, batch_size=50)
    assert await items.count() == 1
    with pytest.raises(ValidationError, match="Row 2: unknown field 'bogus'"):
        await items.bulk_create([{"name": "a"}, {"name": "b"}, {"name": "c", "bogus": 1}])
    with pytest.raises(ValidationError, match="Row 1"):
        await items.bulk_create([{"name": "a"}, {"qty": 3}])
    with pytest.raises(ValidationError, match="Row 0"):
        await items.bulk_create([42])  # type: ignore[list-item]
    assert await items.count() == 1


@pytest.mark.requires("savepoint")
async def test_bulk_calls_inside_a_unit_are_atomic(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db) as uow:
        repo = uow.get_repository(Item)
        await repo.create(name="kept")
        with pytest.raises(ValidationError):
            await repo.bulk_create([{"name": "a"}, {"name": "b"}, {"qty": 1}])
    assert [i.name for i in await Repository(Item, db).get_all()] == ["kept"]


async def test_bulk_update(items: Repository[Item]) -> None:
    await items.bulk_create({"name": f"r{i}", "qty": i} for i in range(5))
    all_items = await items.get_all()
    stamp = all_items[0].updated_at
    count = await items.bulk_update(
        [{"id": all_items[0].id, "qty": 100}, {"id": all_items[1].id, "name": "x"}]
    )
    assert count == 2
    first = await items.get(all_items[0].id)
    assert first.qty == 100 and first.updated_at >= stamp
    assert (await items.get(all_items[1].id)).name == "x"
    with pytest.raises(NotFoundError, match="Row 1"):
        await items.bulk_update([{"id": all_items[2].id, "qty": 7}, {"id": 99999, "qty": 1}])
    assert (await items.get(all_items[2].id)).qty == 2
    with pytest.raises(ValidationError, match="primary key"):
        await items.bulk_update([{"qty": 1}])


async def test_bulk_delete_soft_and_hard(items: Repository[Item]) -> None:
    await items.bulk_create({"name": f"r{i}"} for i in range(6))
    ids = [i.id for i in await items.get_all()]
    assert await items.bulk_delete(ids[:3]) == 3
    assert await items.count() == 3
    assert await items.count(with_deleted=True) == 6
    assert await items.bulk_delete(ids[:3]) == 0  # already soft-deleted
    assert await items.bulk_delete(ids[2:4], soft=False) == 2
    assert await items.count(with_deleted=True) == 4
    assert await items.bulk_delete([], soft=False) == 0


async def test_upsert(db: AsyncDatabaseManager) -> None:
    kinds = Repository(Kind, db)
    first = await kinds.upsert(
        {"namespace": "a", "code": "x", "label": "one"}, conflict_on=["namespace", "code"]
    )
    second = await kinds.upsert(
        {"namespace": "a", "code": "x", "label": "two"}, conflict_on=["namespace", "code"]
    )
    assert first.id == second.id
    assert second.label == "two"
    assert await kinds.count() == 1
    with pytest.raises(ValidationError, match="neither the primary key nor a unique"):
        await kinds.upsert({"namespace": "a", "code": "y"}, conflict_on=["namespace"])
    with pytest.raises(ValidationError, match="conflict_on"):
        await kinds.upsert({"namespace": "a"}, conflict_on=["namespace", "code"])
    with pytest.raises(ValidationError):
        await kinds.upsert({"namespace": "a", "code": "q"}, conflict_on="code")  # type: ignore[arg-type]


async def test_upsert_revives_soft_deleted_row(items: Repository[Item]) -> None:
    item = await items.create(name="a", sku="S1")
    await items.delete(item.id)
    again = await items.upsert({"name": "b", "sku": "S1"}, conflict_on=["sku"])
    assert again.id == item.id
    assert again.deleted_at is None and again.name == "b"


async def test_bulk_upsert(db: AsyncDatabaseManager) -> None:
    kinds = Repository(Kind, db)
    await kinds.create(namespace="a", code="1", label="old")
    rows = [{"namespace": "a", "code": str(i), "label": f"v{i}"} for i in range(1, 6)]
    assert await kinds.bulk_upsert(rows, conflict_on=["namespace", "code"], batch_size=2) == 5
    assert await kinds.count() == 5
    one = await kinds.find_one_by(code="1")
    assert one is not None and one.label == "v1"
    with pytest.raises(ValidationError, match="repeats"):
        await kinds.bulk_upsert(rows + rows[:1], conflict_on=["namespace", "code"])


# -- binding modes ------------------------------------------------------------------------------


async def test_caller_managed_session(db: AsyncDatabaseManager) -> None:
    async with db.session() as session:
        repo = Repository(Item, session=session)
        item = await repo.create(name="a")
        assert await repo.get_by_id(item.id) is item
        await session.rollback()
    assert await Repository(Item, db).count() == 0


async def test_repository_joins_the_active_unit(db: AsyncDatabaseManager) -> None:
    repo = Repository(Item, db)
    with pytest.raises(RuntimeError):
        async with AsyncUnitOfWork(db):
            await repo.create(name="rolled back")
            assert await repo.count() == 1
            raise RuntimeError("boom")
    assert await repo.count() == 0


async def test_repository_needs_exactly_one_binding(db: AsyncDatabaseManager) -> None:
    # Every bad Repository argument is a ConfigurationError (issue 13 item 3).
    with pytest.raises(ConfigurationError, match="exactly one of"):
        Repository(Item)
    with pytest.raises(ConfigurationError, match="mapped model class"):
        Repository(int, db)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="route must be one of"):
        Repository(Item, db, route="elsewhere")  # type: ignore[arg-type]


async def test_values_and_types_round_trip(db: AsyncDatabaseManager) -> None:
    import decimal
    import uuid

    from tests.integration.models import Color

    account = await Repository(Account, db).create(email="a@b", balance=decimal.Decimal("1.25"))
    orders = Repository(Order, db)
    token = uuid.uuid4()
    order = await orders.create(
        account_id=account.id,
        token=token,
        amount=decimal.Decimal("12345.678901"),
        color=Color.BLUE,
        blob=b"\x00\xff",
        due=dt.date(2030, 1, 2),
    )
    loaded = await orders.get(order.id)
    assert loaded.token == token
    assert loaded.amount == decimal.Decimal("12345.678901")
    assert loaded.color is Color.BLUE
    async with db.session() as session:
        assert (await session.scalar(select(Order.blob))) == b"\x00\xff"
