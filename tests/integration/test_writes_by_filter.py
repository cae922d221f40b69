"""update_by / delete_by on every backend: counts, soft delete, audit, cache, validation."""

from __future__ import annotations

import decimal
from typing import Any

import pytest

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    AuditAction,
    ConflictError,
    Repository,
    RepositoryCache,
    ValidationError,
    audit_context,
    get_audit_logs,
)
from tests.cases import each_case
from tests.integration.models import Account, Counter, Item, Order, Post
from tests.integration.test_loading import seed_blog
from tests.integration.test_repository import counting


async def make_items(db: AsyncDatabaseManager) -> Repository[Item]:
    items = Repository(Item, db)
    await items.bulk_create(
        [
            {"name": "a", "qty": 1, "category": "x"},
            {"name": "b", "qty": 2, "category": "x"},
            {"name": "c", "qty": 3, "category": "y"},
            {"name": "d", "qty": 4, "category": "x"},
        ]
    )
    await items.delete(4)  # "d" is soft-deleted
    return items


async def state(items: Repository[Item]) -> dict[str, tuple[int, bool]]:
    rows = await items.get_all(with_deleted=True)
    return {i.name: (i.qty, i.deleted_at is not None) for i in rows}


async def test_update_by_changes_live_matching_rows_and_counts_them(
    db: AsyncDatabaseManager,
) -> None:
    items = await make_items(db)
    assert await items.update_by({"qty": 9}, category="x") == 2
    assert await state(items) == {
        "a": (9, False),
        "b": (9, False),
        "c": (3, False),
        "d": (4, True),  # soft-deleted rows are never changed
    }
    assert await items.update_by({"qty": 0}, category="nope") == 0


async def test_update_by_audits_each_row_with_old_values(db: AsyncDatabaseManager) -> None:
    items = await make_items(db)
    before = {i.name: i for i in await items.get_all()}
    with audit_context(user_id=42):
        assert await items.update_by({"qty": 7, "name": "b"}, qty__lte=2) == 2
    logs = await get_audit_logs(db, table_name="t_item", action=AuditAction.BULK_UPDATE)
    by_entity = {log.entity_id: log for log in logs}
    a, b = str(before["a"].id), str(before["b"].id)
    assert set(by_entity) == {a, b}
    assert by_entity[a].old_values == {"qty": 1, "name": "a"}
    assert by_entity[a].new_values == {"qty": 7, "name": "b"}
    assert by_entity[b].old_values == {"qty": 2}  # name was already "b"
    assert {log.user_id for log in logs} == {"42"}
    updated = await items.get(before["a"].id)
    assert updated.updated_at is not None and updated.updated_at >= before["a"].updated_at


async def test_delete_by_is_soft_by_default_and_audited(db: AsyncDatabaseManager) -> None:
    items = await make_items(db)
    assert await items.delete_by(category="x") == 2  # "d" was already deleted
    assert await state(items) == {
        "a": (1, True),
        "b": (2, True),
        "c": (3, False),
        "d": (4, True),
    }
    logs = await get_audit_logs(db, table_name="t_item", action=AuditAction.BULK_DELETE)
    assert len(logs) == 2 and all(log.changed_fields == ["deleted_at"] for log in logs)
    assert all(log.old_values == {"deleted_at": None} for log in logs)


async def test_hard_delete_by(db: AsyncDatabaseManager) -> None:
    items = await make_items(db)
    assert await items.delete_by(soft=False, category="x") == 2
    assert await state(items) == {"c": (3, False), "d": (4, True)}
    assert await items.delete_by(soft=False, with_deleted=True, category="x") == 1
    assert await state(items) == {"c": (3, False)}
    logs = await get_audit_logs(db, table_name="t_item", action=AuditAction.BULK_DELETE)
    olds = sorted(log.old_values["name"] for log in logs if log.old_values)
    assert olds == ["a", "b", "d"]


@pytest.mark.requires("foreign_key_actions")
async def test_writes_through_relationships(db: AsyncDatabaseManager) -> None:
    await seed_blog(db)
    posts = Repository(Post, db)
    assert await posts.update_by({"score": 50}, tags__name="python") == 2
    assert sorted(p.title for p in await posts.find_by(score=50)) == ["p1", "p2"]
    assert await posts.delete_by(writer__username="ann") == 1
    assert [p.title for p in await posts.find_by(order_by="title")] == ["p1", "p3"]


@pytest.mark.requires("update_returning")
async def test_unaudited_model_takes_one_statement(db: AsyncDatabaseManager) -> None:
    counters = Repository(Counter, db)
    await counters.bulk_create([{"value": v} for v in range(5)])
    with counting(db) as seen:
        assert await counters.update_by({"value": 100}, value__gte=3) == 2
    assert len(seen) == 1
    with counting(db) as seen:
        assert await counters.delete_by(value=100) == 2  # no deleted_at: a hard delete
    assert len(seen) == 1
    assert sorted(c.value for c in await counters.get_all()) == [0, 1, 2]
    with pytest.raises(ValidationError, match="cannot be soft-deleted"):
        await counters.delete_by(soft=True, value=1)


async def test_audited_secret_columns_stay_out_of_the_log(db: AsyncDatabaseManager) -> None:
    accounts = Repository(Account, db)
    await accounts.create(email="a@x.org", password_hash="secret-1", balance=decimal.Decimal(5))
    assert await accounts.update_by({"password_hash": "secret-2"}, email="a@x.org") == 1
    assert await accounts.delete_by(email="a@x.org") == 1  # hard: no deleted_at
    for log in await get_audit_logs(db, table_name="t_account"):
        assert "password_hash" not in (log.old_values or {})
        assert "password_hash" not in (log.new_values or {})


async def test_a_failing_delete_by_changes_nothing(db: AsyncDatabaseManager) -> None:
    accounts = Repository(Account, db)
    first = await accounts.create(email="a@x.org")
    await accounts.create(email="b@x.org")
    await Repository(Order, db).create(account_id=first.id)
    with pytest.raises(ConflictError):
        await accounts.delete_by(email__like="%@x.org")
    assert await accounts.count() == 2
    assert await get_audit_logs(db, table_name="t_account", action=AuditAction.BULK_DELETE) == []


async def test_writes_by_filter_invalidate_the_cache(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db, cache=RepositoryCache(ttl=60.0))
    await items.bulk_create([{"name": "a", "qty": 1}, {"name": "b", "qty": 2}])
    assert (await items.get(1)).qty == 1
    assert await items.count(qty=1) == 1
    await items.update_by({"qty": 5}, name="a")
    assert (await items.get(1)).qty == 5
    assert await items.count(qty=1) == 0
    await items.delete_by(name="a")
    assert await items.get_by_id(1) is None
    assert await items.count() == 1


async def test_inside_a_unit_the_session_sees_the_change(db: AsyncDatabaseManager) -> None:
    items = await make_items(db)
    async with AsyncUnitOfWork(db) as uow:
        repo = uow.get_repository(Item)
        a = await repo.get(1)
        assert a.qty == 1
        assert await repo.update_by({"qty": 11}, id=1) == 1
        assert (await repo.get(1)).qty == 11
        await uow.rollback()
    assert (await items.get(1)).qty == 1


@pytest.fixture
async def seeded_items(db: AsyncDatabaseManager) -> Repository[Item]:
    """The rows of :func:`make_items`, made once for a whole table of refusals."""
    return await make_items(db)


@each_case(
    ("call", "fragment"),
    [
        (lambda r: r.update_by({"qty": 1}), "without a filter would change every Item"),
        (lambda r: r.delete_by(), "without a filter would change every Item"),
        (lambda r: r.update_by({}, name="a"), "at least one value"),
        (lambda r: r.update_by([("qty", 1)], name="a"), "as a mapping"),
        (lambda r: r.update_by({"nope": 1}, name="a"), "Unknown field 'nope'"),
        (lambda r: r.update_by({"id": 9}, name="a"), "cannot change the primary key"),
        (lambda r: r.update_by({"qty": "many"}, name="a"), "qty"),
        (lambda r: r.update_by({"qty": 1}, nope="a"), "Unknown field 'nope'"),
        (lambda r: r.update_by({"qty": 1}, allow_all="yes"), "allow_all must be True or False"),
        (lambda r: r.delete_by(soft="no", name="a"), "soft must be True or False"),
        (lambda r: r.delete_by(with_deleted=1, name="a"), "with_deleted must be True or False"),
    ],
)
async def test_bad_writes_by_filter_send_no_sql(
    db: AsyncDatabaseManager, seeded_items: Repository[Item], call: Any, fragment: str
) -> None:
    items = seeded_items
    before = await state(items)
    assert before == {"a": (1, False), "b": (2, False), "c": (3, False), "d": (4, True)}
    with counting(db) as seen, pytest.raises(ValidationError, match=fragment):
        await call(items)
    assert seen == []
    assert await state(items) == before


async def test_allow_all(db: AsyncDatabaseManager) -> None:
    items = await make_items(db)
    assert await items.update_by({"category": "z"}, allow_all=True) == 3
    assert await items.delete_by(allow_all=True) == 3
    assert await items.count() == 0 and await items.count(with_deleted=True) == 4
