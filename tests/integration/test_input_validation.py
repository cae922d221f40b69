"""Input at the surface, identical on every backend (issue 14, items 8-11).

Every rejection here must happen before any SQL: each test counts statements.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, text

from asyncdb import AsyncDatabaseManager, DataError, Repository, ValidationError
from asyncdb._filters import MAX_IN_VALUES
from tests.cases import each_case
from tests.integration.models import Account, Color, Counter, Item, Order
from tests.integration.test_repository import counting

# -- 8: flags are bools, order_by is names -------------------------------------------------


@each_case("flag", ["false", "true", 0, 1, None, "0"])
async def test_with_deleted_accepts_only_bool(db: AsyncDatabaseManager, flag: Any) -> None:
    items = Repository(Item, db)
    item = await items.create(name="gone")
    await items.delete(item.id)
    calls: list[Any] = [
        lambda: items.find_by(with_deleted=flag),
        lambda: items.count(with_deleted=flag),
        lambda: items.exists(with_deleted=flag),
        lambda: items.paginate(with_deleted=flag),
        lambda: items.paginate_keyset(with_deleted=flag),
        lambda: items.get_all(with_deleted=flag),
        lambda: items.find_one_by(name="gone", with_deleted=flag),
        lambda: items.get_by_id(item.id, with_deleted=flag),
        lambda: items.get(item.id, with_deleted=flag),
    ]
    for call in calls:
        with counting(db) as seen, pytest.raises(ValidationError, match="with_deleted"):
            await call()
        assert seen == []


@each_case("flag", ["false", "true", 1, 0])
async def test_soft_accepts_only_bool_and_deletes_nothing(
    db: AsyncDatabaseManager, flag: Any
) -> None:
    items = Repository(Item, db)
    item = await items.create(name="kept")
    with counting(db) as seen, pytest.raises(ValidationError, match="soft"):
        await items.delete(item.id, soft=flag)
    with pytest.raises(ValidationError, match="soft"):
        await items.bulk_delete([item.id], soft=flag)
    assert seen == []
    assert (await items.get(item.id)).deleted_at is None


@each_case("order_by", [5, 1.5, {"name": 1}, b"name", object()])
async def test_order_by_takes_only_names(db: AsyncDatabaseManager, order_by: Any) -> None:
    items = Repository(Item, db)
    with counting(db) as seen, pytest.raises(ValidationError, match="order_by"):
        await items.find_by(order_by=order_by)
    with pytest.raises(ValidationError, match="order_by"):
        await items.paginate_keyset(order_by=order_by)
    assert seen == []


# -- 9: values checked against column types, converted from strings when lossless ----------


async def test_query_string_values_are_converted(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    await items.bulk_create([{"name": f"n{i}", "qty": i} for i in range(5)])
    assert await items.count(qty="3") == 1
    assert await items.count(qty__gte="3") == 2
    assert await items.count(qty__in=["1", "2", 4]) == 3
    # page numbers and sizes from a query string convert the same way
    page = await items.paginate(page="2", page_size="2", order_by="qty")
    assert ([i.qty for i in page.items], page.total) == ([2, 3], 5)
    assert [i.qty for i in await items.find_by(limit="2", offset="3", order_by="qty")] == [3, 4]
    assert len((await items.paginate_keyset(limit="4")).items) == 4
    accounts = Repository(Account, db)
    acct = await accounts.create(email="a@x", balance="12.50")
    assert acct.balance == decimal.Decimal("12.50")
    orders = Repository(Order, db)
    token = uuid.uuid4()
    order = await orders.create(
        account_id=str(acct.id), token=str(token), due="2020-01-02", color="RED"
    )
    assert (order.token, order.due, order.color) == (token, dt.date(2020, 1, 2), Color.RED)
    assert await orders.count(token=str(token), due="2020-01-02", color="red") == 1
    got = await orders.get(str(order.id))
    assert got.id == order.id


BAD_VALUES: list[tuple[str, Any, str]] = [
    ("qty", "abc", "qty must be an integer"),
    ("qty", 1.5, "qty must be a whole number"),
    ("qty", True, "qty must be an integer"),
    ("qty", 2**31, "out of range"),
    ("qty", -(2**31) - 1, "out of range"),
    ("qty", 10**30, "out of range"),
    ("qty", [1], "qty must be an integer"),
    ("name", 5, "name must be a string"),
    ("name", "x" * 101, "longer than its column"),
    ("name", "nul\x00", "NUL"),
    ("name", "lone \ud800", "surrogate"),
    ("name", b"bytes", "name must be a string"),
]


@pytest.fixture
async def kept_item(db: AsyncDatabaseManager) -> Item:
    """One row, made once for a whole table of refusals that must leave it as it is."""
    return await Repository(Item, db).create(name="ok", qty=1)


@each_case(("field", "value", "message"), BAD_VALUES)
async def test_bad_values_are_refused_before_sql_on_every_path(
    db: AsyncDatabaseManager, kept_item: Item, field: str, value: Any, message: str
) -> None:
    items = Repository(Item, db)
    item = kept_item
    values = {"name": "n", "qty": 1, field: value}
    calls: list[Any] = [
        lambda: items.create(**values),
        lambda: items.update(item.id, **{field: value}),
        lambda: items.bulk_create([{"name": "fine"}, values]),
        lambda: items.bulk_update([{"id": item.id, field: value}]),
        lambda: items.upsert({**values, "sku": "s"}, conflict_on=["sku"]),
        lambda: items.bulk_upsert([{**values, "sku": "s"}], conflict_on=["sku"]),
        lambda: items.find_by(**{field: value}),
        lambda: items.count(**{f"{field}__ne": value}),
        lambda: items.exists(**{f"{field}__in": [value]}),
        lambda: items.paginate(**{f"{field}__lt": value}),
    ]
    for call in calls:
        with counting(db) as seen, pytest.raises(ValidationError, match=message):
            await call()
        assert seen == [], f"SQL was sent for {field}={type(value).__name__}"
    assert [(i.id, i.name, i.qty) for i in await items.get_all(with_deleted=True)] == [
        (item.id, "ok", 1)
    ]


@each_case("ident", ["abc", 1.5, True, 2**63, -(2**63) - 1, [1], {"id": 1}, None, "1; drop table"])
async def test_bad_ids_are_validation_errors(db: AsyncDatabaseManager, ident: Any) -> None:
    items = Repository(Item, db)
    for call in (items.get_by_id, items.delete, items.restore):
        with counting(db) as seen, pytest.raises(ValidationError):
            await call(ident)
        assert seen == []


@each_case(
    ("name", "value"),
    [
        ("page", 2**63),
        ("page", 10**30),
        ("page_size", 10**30),
        ("limit", 2**64),
        ("offset", 2**63),
        ("page", -1),
        ("page", "2.0"),
        ("page", "-2"),
    ],
)
async def test_huge_or_bad_pagination_numbers(
    db: AsyncDatabaseManager, name: str, value: Any
) -> None:
    items = Repository(Item, db)
    with counting(db) as seen, pytest.raises(ValidationError, match=name):
        if name in ("page", "page_size"):
            await items.paginate(**{name: value})
        else:
            await items.find_by(**{name: value})
    assert seen == []


async def test_page_far_beyond_int64_offset_is_refused(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    with pytest.raises(ValidationError, match="offset"):
        await items.paginate(page=2**62, page_size=1000)


# -- 10: data the database rejects is a client error ----------------------------------------


async def test_database_rejected_data_is_a_data_error(
    db: AsyncDatabaseManager, is_postgres: bool
) -> None:
    cases: list[tuple[Any, dict[str, Any]]] = [
        (insert(Item).values(name="x" * 200), {}),
        (insert(Account).values(email="a", balance=decimal.Decimal("1e20")), {}),
        (text("SELECT CAST(:v AS integer)"), {"v": "abc"}),
        (insert(Item).values(name="a\x00b"), {}),
    ]
    if not is_postgres:
        # SQLite stores over-long text and out-of-range numerics as given; what its
        # driver cannot send at all is a DataError there too.
        cases = [
            (insert(Item).values(name="a\ud800b"), {}),
            (insert(Item).values(name="a", qty=2**70), {}),
        ]
    for statement, params in cases:
        with pytest.raises(DataError) as info:
            async with db.session() as session:
                await session.execute(statement, params)
                await session.commit()
        assert isinstance(info.value, ValidationError)
        assert "abc" not in str(info.value) and "xxxxx" not in str(info.value)
    assert await Repository(Item, db).count() == 0


# -- 11: never beyond the parameter limit ------------------------------------------------------


async def test_huge_in_list_is_refused_before_sql(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    await items.create(name="a")
    with counting(db) as seen, pytest.raises(ValidationError, match=str(MAX_IN_VALUES)):
        await items.find_by(id__in=list(range(100_000)))
    assert seen == []
    assert await items.count(id__in=list(range(MAX_IN_VALUES))) == 1


@pytest.mark.slow  # several seconds per backend
async def test_bulk_batches_never_exceed_the_parameter_limit(db: AsyncDatabaseManager) -> None:
    # 33,000 keys in one batch: more than PostgreSQL's 32,767 parameters per statement.
    rows = 33_000
    counters = Repository(Counter, db)
    await counters.bulk_create([{"id": i, "value": 0} for i in range(1, rows + 1)])
    updated = await counters.bulk_update(
        [{"id": i, "value": 7} for i in range(1, rows + 1)], batch_size=rows
    )
    assert updated == rows
    assert await counters.count(value=7) == rows
    deleted = await counters.bulk_delete(list(range(1, rows + 1)), batch_size=rows)
    assert deleted == rows
    assert await counters.count() == 0


@each_case("field", ["qty", "id", "created_at"])
async def test_like_needs_a_text_column(db: AsyncDatabaseManager, field: str) -> None:
    items = Repository(Item, db)
    with counting(db) as seen, pytest.raises(ValidationError, match="text columns"):
        await items.find_by(**{f"{field}__like": "1%"})
    assert seen == []
