"""The audit trail on every backend: every change path, atomicity, who, and values."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, select

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    AuditAction,
    AuditLog,
    Repository,
    ValidationError,
    audit_context,
    cleanup_audit_logs,
    get_audit_logs,
    utcnow,
)
from tests.integration.models import Account, Color, Counter, Item, Kind, Order
from tests.integration.test_repository import counting


async def logs(db: AsyncDatabaseManager, **filters: Any) -> list[AuditLog]:
    return await get_audit_logs(db, limit=10_000, **filters)


async def test_single_row_paths_write_one_row_each(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    item = await items.create(name="a", qty=1)
    await items.update(item.id, name="b")
    await items.delete(item.id)
    await items.restore(item.id)
    await items.delete(item.id, soft=False)
    rows = list(reversed(await logs(db, table_name="t_item", entity_id=item.id)))
    actions = [r.action for r in rows]
    assert actions == ["CREATE", "UPDATE", "SOFT_DELETE", "RESTORE", "DELETE"]
    create, update, soft, restore, hard = rows
    assert create.new_values is not None and create.new_values["name"] == "a"
    assert create.old_values is None
    assert update.changed_fields == ["name"]
    assert update.old_values == {"name": "a"}
    assert update.new_values == {"name": "b"}
    assert soft.old_values == {"deleted_at": None}
    assert soft.new_values is not None and soft.new_values["deleted_at"] is not None
    assert restore.new_values == {"deleted_at": None}
    assert hard.old_values is not None and hard.old_values["name"] == "b"
    assert all(r.entity_id == str(item.id) for r in rows)
    assert all(r.occurred_at.tzinfo is not None for r in rows)


async def test_unaudited_models_and_audit_false_write_nothing(db: AsyncDatabaseManager) -> None:
    await Repository(Counter, db).create(id=1)
    quiet = Repository(Item, db, audit=False)
    item = await quiet.create(name="quiet")
    await quiet.update(item.id, name="still quiet")
    await quiet.bulk_create([{"name": "x"}, {"name": "y"}])
    assert await logs(db) == []


async def test_plain_orm_changes_through_a_unit_are_audited(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db, user_id="u1") as uow:
        obj = Item(name="orm")
        uow.session.add(obj)
        await uow.flush()
        obj.qty = 9
    async with AsyncUnitOfWork(db, user_id="u2") as uow:
        loaded = await uow.session.get(Item, obj.id)
        assert loaded is not None
        await uow.session.delete(loaded)
    rows = list(reversed(await logs(db, table_name="t_item")))
    assert [(r.action, r.user_id) for r in rows] == [
        ("CREATE", "u1"),
        ("UPDATE", "u1"),
        ("DELETE", "u2"),
    ]
    assert rows[1].old_values == {"qty": 0} and rows[1].new_values == {"qty": 9}


async def test_bulk_paths_write_one_row_per_entity_in_batches(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    with counting(db) as seen:
        assert (
            await items.bulk_create(({"name": f"n{i}"} for i in range(250)), batch_size=100) == 250
        )
    audit_inserts = [
        s for s in seen if "asyncdb_audit_log" in s and s.lstrip().upper().startswith("INSERT")
    ]
    assert 1 <= len(audit_inserts) <= 6
    created = await logs(db, action=AuditAction.BULK_CREATE)
    assert len(created) == 250
    assert len({r.entity_id for r in created}) == 250
    ids = sorted(int(r.entity_id or 0) for r in created)[:3]
    await items.bulk_update([{"id": ids[0], "qty": 5}, {"id": ids[1], "qty": 0}])
    updated = await logs(db, action="BULK_UPDATE")
    # the second row did not really change qty (0 → 0): no audit row for it
    assert [(r.entity_id, r.old_values, r.new_values) for r in updated] == [
        (str(ids[0]), {"qty": 0}, {"qty": 5})
    ]
    await items.bulk_delete(ids, soft=True)
    deleted = await logs(db, action=AuditAction.BULK_DELETE)
    assert sorted(int(r.entity_id or 0) for r in deleted) == ids
    kinds = Repository(Kind, db)
    await kinds.create(namespace="a", code="1", label="old")
    await kinds.bulk_upsert(
        [{"namespace": "a", "code": "1", "label": "new"}, {"namespace": "a", "code": "2"}],
        conflict_on=["namespace", "code"],
    )
    assert await logs(db, action="UPSERT") == []  # Kind is not Audited
    accounts = Repository(Account, db)
    await accounts.bulk_upsert(
        [{"email": "a@x", "password_hash": "h1"}, {"email": "b@x"}], conflict_on=["email"]
    )
    await accounts.upsert(
        {"email": "a@x", "balance": decimal.Decimal("3.5")}, conflict_on=["email"]
    )
    upserts = list(reversed(await logs(db, action="UPSERT")))
    assert len(upserts) == 3
    assert upserts[2].old_values == {"balance": "0.000000"} or upserts[2].old_values == {
        "balance": "0"
    }
    assert upserts[2].new_values == {"balance": "3.500000"} or upserts[2].new_values == {
        "balance": "3.5"
    }


@pytest.mark.requires("savepoint")
async def test_rollback_leaves_no_audit_rows(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    with pytest.raises(RuntimeError):
        async with AsyncUnitOfWork(db):
            await items.create(name="gone")
            raise RuntimeError("boom")
    async with AsyncUnitOfWork(db) as uow:
        await items.create(name="kept")
        with pytest.raises(RuntimeError):
            async with uow.savepoint():
                await items.create(name="savepoint")
                raise RuntimeError("undo the savepoint")
    started = asyncio.Event()

    async def cancelled() -> None:
        async with AsyncUnitOfWork(db):
            await items.create(name="cancelled")
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(cancelled())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    rows = await logs(db)
    assert [r.new_values["name"] for r in rows if r.new_values] == ["kept"]
    assert [i.name for i in await items.get_all()] == ["kept"]


async def test_excluded_columns_never_appear(db: AsyncDatabaseManager) -> None:
    accounts = Repository(Account, db)
    account = await accounts.create(email="a@x", password_hash="s3cret-hash")
    await accounts.update(account.id, password_hash="other-hash", email="b@x")
    await accounts.bulk_update([{"id": account.id, "password_hash": "third-hash"}])
    await accounts.upsert({"email": "b@x", "password_hash": "fourth-hash"}, conflict_on=["email"])
    await accounts.delete(account.id)
    rows = await logs(db, table_name="t_account")
    assert len(rows) >= 4
    for row in rows:
        text = repr((row.old_values, row.new_values))
        assert "password_hash" not in text and "hash" not in text.replace("password_hash", "")


async def test_odd_value_types_are_encoded(db: AsyncDatabaseManager) -> None:
    account = await Repository(Account, db).create(email="a@x")
    token = uuid.UUID("12345678-1234-5678-1234-567812345678")
    order = await Repository(Order, db).create(
        account_id=account.id,
        token=token,
        amount=decimal.Decimal("1.1000000001"),
        color=Color.RED,
        blob=b"\x00\x01",
        due=dt.date(2031, 2, 3),
    )
    (row,) = await logs(db, table_name="t_order")
    values = row.new_values or {}
    assert values["token"] == str(token)
    assert values["amount"] == "1.1000000001"
    assert values["color"] == "red"
    assert values["blob"] == "AAE="
    assert values["due"] == "2031-02-03"
    assert row.entity_id == str(order.id)


def test_json_safe_never_raises() -> None:
    from asyncdb._audit import json_safe

    class Weird:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert json_safe(dt.time(1, 2, 3)) == "01:02:03"
    assert json_safe(float("nan")) == "nan"
    assert json_safe(
        {
            1: {
                decimal.Decimal("2"),
            }
        }
    ) == {"1": ["2"]}
    assert json_safe(Weird()) == "<unprintable Weird>"


async def test_who_precedence(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db).set_context(
        user_id="repo", session_id="repo-s", correlation_id="repo-c"
    )
    await items.create(name="defaults")
    async with audit_context(user_id="ctx", correlation_id="ctx-c"):
        await items.create(name="context")
        async with AsyncUnitOfWork(db, user_id="unit"):
            await items.create(name="unit")
    rows = {r.new_values["name"]: r for r in await logs(db) if r.new_values}
    assert (
        rows["defaults"].user_id,
        rows["defaults"].session_id,
        rows["defaults"].correlation_id,
    ) == (
        "repo",
        "repo-s",
        "repo-c",
    )
    assert (rows["context"].user_id, rows["context"].correlation_id) == ("ctx", "ctx-c")
    assert rows["context"].session_id == "repo-s"
    assert (rows["unit"].user_id, rows["unit"].correlation_id) == ("unit", "ctx-c")


@pytest.mark.slow
async def test_concurrent_contexts_never_mix(db: AsyncDatabaseManager, backend: str) -> None:
    items = Repository(Item, db)
    count = 500 if backend != "sqlite-memory" else 200

    async def one(i: int) -> None:
        async with audit_context(user_id=f"u{i}", correlation_id=f"c{i}", tenant=i):
            await asyncio.sleep(0)
            await items.create(name=f"n{i}")

    await asyncio.gather(*(one(i) for i in range(count)))
    rows = await logs(db, table_name="t_item")
    assert len(rows) == count
    for row in rows:
        name = (row.new_values or {})["name"]
        i = name[1:]
        assert row.user_id == f"u{i}"
        assert row.correlation_id == f"c{i}"
        assert row.extra == {"tenant": int(i)}


async def test_get_audit_logs_filters_and_order(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    async with audit_context(user_id="alice", correlation_id="req-1"):
        a = await items.create(name="a")
    async with audit_context(user_id="bob"):
        await items.update(a.id, name="b")
    newest_first = await logs(db)
    assert [r.action for r in newest_first] == ["UPDATE", "CREATE"]
    assert [r.action for r in await logs(db, user_id="alice")] == ["CREATE"]
    assert [r.action for r in await logs(db, correlation_id="req-1")] == ["CREATE"]
    assert len(await logs(db, since=utcnow() - dt.timedelta(minutes=5))) == 2
    assert await logs(db, until=utcnow() - dt.timedelta(minutes=5)) == []
    assert len(await get_audit_logs(db, limit=1)) == 1
    assert len(await get_audit_logs(db, limit=1, offset=1)) == 1
    for bad in ({"limit": 0}, {"offset": -1}, {"action": "EXPLODE"}):
        with pytest.raises(ValidationError):
            await get_audit_logs(db, **bad)


async def test_cleanup_deletes_old_rows_in_batches(db: AsyncDatabaseManager) -> None:
    old = utcnow() - dt.timedelta(days=40)
    async with db.session() as session:
        await session.execute(
            insert(AuditLog),
            [
                {"table_name": "t", "entity_id": str(i), "action": "CREATE", "occurred_at": old}
                for i in range(25)
            ],
        )
        await session.commit()
    await Repository(Item, db).create(name="recent")
    assert await cleanup_audit_logs(db, retention_days=30, batch_size=10) == 25
    async with db.session() as session:
        remaining = (await session.scalars(select(AuditLog.table_name))).all()
    assert remaining == ["t_item"]
    for bad in (0, -1, 0.5):
        with pytest.raises(ValidationError, match="retention_days"):
            await cleanup_audit_logs(db, retention_days=bad)  # type: ignore[arg-type]
