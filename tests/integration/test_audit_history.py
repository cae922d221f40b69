"""history, as_of and revert on every backend, and as_of against a model kept alongside."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from asyncdb import (
    AsyncDatabaseManager,
    AuditLog,
    NotFoundError,
    Repository,
    ValidationError,
    as_of,
    audit_context,
    get_audit_logs,
    history,
    revert,
    utcnow,
    verify_audit_chain,
)
from asyncdb._audit import TRUNCATED_MARKER
from tests.integration.models import Account, Item


async def test_history_lists_versions_with_who_when_and_what(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    with audit_context(user_id="ann"):
        item = await items.create(name="a", qty=1)
    with audit_context(user_id="bob"):
        await items.update(item.id, qty=2)
        await items.delete(item.id)
    versions = await history(Item, item.id, db=db)
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.action for v in versions] == ["CREATE", "UPDATE", "SOFT_DELETE"]
    assert [v.user_id for v in versions] == ["ann", "bob", "bob"]
    assert versions[1].changed_fields == ["qty"]
    assert (versions[1].old_values or {})["qty"] == 1
    assert versions[0].values is not None and versions[0].values["qty"] == 1
    assert versions[2].values is not None and versions[2].values["qty"] == 2
    assert versions[2].values["deleted_at"] is not None
    assert versions[0].occurred_at <= versions[1].occurred_at <= versions[2].occurred_at
    assert await history(Item, 999, db=db) == []


async def test_as_of_rebuilds_values_at_a_moment(db: AsyncDatabaseManager) -> None:
    accounts = Repository(Account, db)
    before = utcnow()
    account = await accounts.create(email="a@x", password_hash="secret", balance=5)
    created = utcnow()
    await accounts.update(account.id, balance=decimal.Decimal("7.25"))
    updated = utcnow()
    await accounts.delete(account.id)
    assert await as_of(Account, account.id, at=before, db=db) is None
    first = await as_of(Account, account.id, at=created, db=db)
    assert first is not None
    assert first["email"] == "a@x" and first["balance"] == decimal.Decimal(5)
    assert "password_hash" not in first  # excluded columns are never in the log
    second = await as_of(Account, account.id, at=updated, db=db)
    assert second is not None and second["balance"] == decimal.Decimal("7.25")
    assert await as_of(Account, account.id, at=utcnow(), db=db) is None
    naive = updated.astimezone(dt.timezone.utc).replace(tzinfo=None)
    assert await as_of(Account, account.id, at=naive, db=db) == second
    with pytest.raises(ValidationError, match="datetime"):
        await as_of(Account, account.id, at="yesterday", db=db)  # type: ignore[arg-type]


async def test_revert_to_an_audit_id_is_an_audited_update(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    item = await items.create(name="a", qty=1, category="x")
    await items.update(item.id, name="b", qty=2)
    await items.update(item.id, category=None)
    first = (await history(Item, item.id, db=db))[0]
    with audit_context(user_id="admin"):
        reverted = await revert(Item, item.id, to=first.audit_id, db=db)
    assert (reverted.name, reverted.qty, reverted.category) == ("a", 1, "x")
    again = await items.get(item.id)
    assert (again.name, again.qty, again.category) == ("a", 1, "x")
    last = (await get_audit_logs(db, table_name="t_item", entity_id=item.id, limit=1))[0]
    assert last.action == "UPDATE" and last.user_id == "admin"
    assert last.extra is not None and last.extra["revert"]["to_audit_id"] == first.audit_id
    assert set(last.changed_fields or []) >= {"name", "qty", "category"}
    assert (await verify_audit_chain(db)).ok


async def test_revert_to_a_time_and_across_deletes(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    item = await items.create(name="a", qty=1)
    moment = utcnow()
    await items.update(item.id, qty=5)
    await items.delete(item.id)  # soft
    reverted = await revert(Item, item.id, to=moment, db=db)
    assert (reverted.qty, reverted.deleted_at) == (1, None)
    await items.delete(item.id, soft=False)
    recreated = await revert(Item, item.id, to=moment, db=db)
    assert (recreated.id, recreated.name, recreated.qty) == (item.id, "a", 1)
    actions = [v.action for v in await history(Item, item.id, db=db)]
    assert actions[-4:] == ["RESTORE", "UPDATE", "DELETE", "CREATE"]
    marked = [v for v in await history(Item, item.id, db=db) if v.extra and "revert" in v.extra]
    assert [v.action for v in marked] == ["RESTORE", "UPDATE", "CREATE"]


async def test_revert_refuses_points_it_cannot_use(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    item = await items.create(name="a")
    other = await items.create(name="b")
    other_row = (await history(Item, other.id, db=db))[0]
    with pytest.raises(NotFoundError, match="not in the trail"):
        await revert(Item, item.id, to=other_row.audit_id, db=db)
    with pytest.raises(ValidationError, match="did not exist"):
        await revert(Item, item.id, to=utcnow() - dt.timedelta(days=1), db=db)
    assert (await items.get(item.id)).name == "a"


async def test_truncated_values_stay_markers_and_revert_refuses_them(
    db: AsyncDatabaseManager,
) -> None:
    items = Repository(Item, db)
    Item.__audit_max_value_bytes__ = 32  # created_at's ISO form (32 bytes) still fits
    try:
        item = await items.create(name="x" * 40, qty=1)
        first = (await history(Item, item.id, db=db))[0]
        await items.update(item.id, name="short", qty=2)
    finally:
        del Item.__audit_max_value_bytes__
    marker = {TRUNCATED_MARKER: {"bytes": 40, "head": "xxxx"}}
    then = await as_of(Item, item.id, at=first.occurred_at, db=db)
    assert then is not None and (then["name"], then["qty"]) == (marker, 1)
    with pytest.raises(ValidationError, match="kept only the head of name of"):
        await revert(Item, item.id, to=first.audit_id, db=db)
    current = await items.get(item.id)
    assert (current.name, current.qty) == ("short", 2)
    assert len(await history(Item, item.id, db=db)) == 2


# -- as_of against a model ---------------------------------------------------------------

IDS = [1, 2, 3]
pick = st.sampled_from(IDS)
ops = st.one_of(
    st.tuples(st.just("create"), pick, st.integers(-5, 5)),
    st.tuples(st.just("update"), pick, st.integers(-5, 5)),
    st.tuples(st.just("delete"), pick, st.booleans()),
    st.tuples(st.just("restore"), pick),
    st.tuples(st.just("bulk_update"), pick, st.integers(-5, 5)),
    st.tuples(st.just("bulk_delete"), pick, st.booleans()),
    st.tuples(st.just("upsert"), pick, st.integers(-5, 5)),
)
State = dict[int, tuple[int, bool]]  # id -> (qty, soft-deleted)


async def step(items: Repository[Item], state: State, op: tuple[Any, ...]) -> None:
    kind, target = op[0], op[1]
    row = state.get(target)
    if kind == "create" and row is None:
        await items.create(id=target, name="n", qty=op[2])
        state[target] = (op[2], False)
    elif kind == "upsert" and (row is None or not row[1]):
        await items.upsert({"id": target, "name": "n", "qty": op[2]}, conflict_on=["id"])
        state[target] = (op[2], False)
    elif row is None:
        return
    elif kind in ("update", "bulk_update") and not row[1]:
        if kind == "update":
            await items.update(target, qty=op[2])
        else:
            await items.bulk_update([{"id": target, "qty": op[2]}])
        state[target] = (op[2], False)
    elif kind in ("delete", "bulk_delete") and not (op[2] and row[1]):
        if kind == "delete":
            await items.delete(target, soft=op[2])
        else:
            await items.bulk_delete([target], soft=op[2])
        if op[2]:
            state[target] = (row[0], True)
        else:
            del state[target]
    elif kind == "restore" and row[1]:
        await items.restore(target)
        state[target] = (row[0], False)


@pytest.mark.slow  # 20 generated histories per backend: several seconds each
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(ops, min_size=1, max_size=10))
async def test_as_of_agrees_with_a_model(
    db: AsyncDatabaseManager, sequence: list[tuple[Any, ...]]
) -> None:
    async with db.session() as session:
        await session.execute(delete(Item))
        await session.execute(delete(AuditLog))
        await session.commit()
    items = Repository(Item, db)
    state: State = {}
    snapshots: list[tuple[dt.datetime, State]] = [(utcnow(), {})]
    for op in sequence:
        await step(items, state, op)
        snapshots.append((utcnow(), dict(state)))
    for moment, expected in snapshots:
        for ident in IDS:
            values = await as_of(Item, ident, at=moment, db=db)
            got = None if values is None else (values["qty"], values.get("deleted_at") is not None)
            assert got == expected.get(ident), (moment, ident)
    assert (await verify_audit_chain(db)).ok
