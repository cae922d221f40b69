"""Audit rows in fewer statements (issue 16): the rows are the multi-statement path's.

* A standalone audited ``create`` on PostgreSQL is one statement (the row and its audit
  row, ``_audit_create``); ``create(instance)`` still takes the ORM flush, so the two
  paths' audit rows can be compared on every backend.
* The audit rows of one flush (or one bulk batch) are one INSERT on every backend.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, text

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    AuditLog,
    QueryError,
    Repository,
    audit_context,
    utcnow,
    verify_audit_chain,
)
from asyncdb._audit import audit_row, write_audit_rows
from asyncdb._audit_model import AuditAction
from asyncdb._context import AuditContext
from tests.integration.conftest import empty_tables, manager_for
from tests.integration.models import Account, Color, Item, Order
from tests.integration.test_audit_chain import chain_of

# Compared as written: everything but the surrogate key, the entity and the chain links
# (each entity starts its own chain, so its hashes differ by construction).
SAME = ("table_name", "action", "user_id", "session_id", "correlation_id", "extra")


@contextmanager
def statements(db: AsyncDatabaseManager) -> Iterator[list[str]]:
    """The SQL statements the manager's engine sends meanwhile (one per cursor call)."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        sent.append(" ".join(sql.split()).upper())

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def audit_inserts(sent: list[str]) -> list[str]:
    return [s for s in sent if s.startswith("INSERT INTO ASYNCDB_AUDIT_LOG")]


def one_statement_creates(sent: list[str]) -> list[str]:
    """The data-modifying ``WITH ins AS (INSERT ...)`` of a one-statement create."""
    return [s for s in sent if s.startswith("WITH") and "AS (INSERT INTO" in s]


def without_key(values: dict[str, Any] | None, key: str = "id") -> dict[str, Any]:
    assert values is not None
    return {k: v for k, v in values.items() if k != key}


async def test_create_rows_equal_the_orm_paths(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    before = utcnow()
    with audit_context(user_id="u1", session_id="s1", correlation_id="c1", tenant="t"):
        by_values = await items.create(name='ä\n"q"', qty=3, sku="x-1")
        by_orm = await items.create(Item(name='ä\n"q"', qty=3, sku="x-2"))
    after = utcnow()
    fast, slow = (
        (await chain_of(db, "t_item", by_values.id)),
        (await chain_of(db, "t_item", by_orm.id)),
    )
    assert len(fast) == len(slow) == 1
    a, b = fast[0], slow[0]
    assert {c: getattr(a, c) for c in SAME} == {c: getattr(b, c) for c in SAME}
    assert a.action == AuditAction.CREATE.value and a.user_id == "u1" and a.extra == {"tenant": "t"}
    assert a.entity_id == str(by_values.id)
    assert a.new_values is not None and b.new_values is not None
    assert a.new_values["id"] == by_values.id and b.new_values["id"] == by_orm.id
    timestamps = ("created_at", "updated_at")
    assert without_key(a.new_values) | {"sku": "x-2"} == without_key(b.new_values) | {
        t: a.new_values[t] for t in timestamps
    }
    assert sorted(a.new_values) == sorted(b.new_values) == a.changed_fields == b.changed_fields
    assert a.old_values is None and b.old_values is None
    assert (a.chain_seq, a.prev_hash, b.chain_seq, b.prev_hash) == (1, None, 1, None)
    for row in (a, b):  # occurred_at: UTC, taken during the call
        assert before <= row.occurred_at <= after
        assert row.occurred_at.utcoffset() == dt.timedelta(0)
    # The instance returned is the row written: key, defaults and values.
    assert (by_values.name, by_values.qty, by_values.deleted_at) == ('ä\n"q"', 3, None)
    assert a.new_values["created_at"] == by_values.created_at.isoformat()
    assert (await items.get(by_values.id)).sku == "x-1"
    report = await verify_audit_chain(db)
    assert report.ok, report


async def test_odd_value_types_hash_the_same_on_both_paths(db: AsyncDatabaseManager) -> None:
    accounts = Repository(Account, db)
    orders = Repository(Order, db)
    account = await accounts.create(email="a@example.org", password_hash="secret")
    values: dict[str, Any] = {
        "account_id": account.id,
        "token": uuid.UUID(int=7),
        "amount": decimal.Decimal("0.00000001"),
        "color": Color.RED,
        "blob": b"\x00\xff",
        "due": dt.date(2024, 2, 29),
    }
    with audit_context(user_id="u2"):
        fast = await orders.create(**values)
        slow = await orders.create(Order(**values))
    a, b = (await chain_of(db, "t_order", fast.id))[0], (await chain_of(db, "t_order", slow.id))[0]
    assert without_key(a.new_values) == without_key(b.new_values)
    account_row = (await chain_of(db, "t_account", account.id))[0]
    assert account_row.new_values is not None and "password_hash" not in account_row.new_values
    assert (await verify_audit_chain(db)).ok


async def test_standalone_audited_create_is_one_statement_on_postgres(
    db: AsyncDatabaseManager, is_postgres: bool
) -> None:
    items = Repository(Item, db)
    await items.create(name="warm")  # connects, so the count below is the create's own
    with statements(db) as sent:
        await items.create(name="one")
    if is_postgres:
        # No BEGIN/COMMIT either: the statement commits itself, as an unaudited create.
        assert len(sent) == 1 and sent[0].startswith("WITH"), sent
    else:
        assert len(audit_inserts(sent)) == 1, sent
    with statements(db) as sent:
        await items.create(Item(name="orm"))  # the ORM flush: INSERT, then the audit row
    assert len(audit_inserts(sent)) == 1
    assert len(sent) > 1
    assert (await verify_audit_chain(db)).ok


async def test_a_given_key_takes_the_orm_path_and_chains(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    with audit_context(user_id="u3"):
        item = await items.create(id=4242, name="given")
        await items.update(item.id, qty=5)
    chain = await chain_of(db, "t_item", 4242)
    assert [r.chain_seq for r in chain] == [1, 2]
    assert chain[1].prev_hash == chain[0].row_hash
    assert (await verify_audit_chain(db)).ok


@pytest.mark.postgres_only
async def test_a_failing_audit_insert_leaves_no_row_on_either_path(postgres_url: str) -> None:
    db = manager_for(postgres_url)
    await db.connect()
    try:
        await empty_tables(db)
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN IF NEW.new_values->>'name' = 'poison' THEN "
                    "RAISE EXCEPTION 'audit refused'; END IF; RETURN NEW; END $$"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON asyncdb_audit_log "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
                )
            )
        items = Repository(Item, db)
        # The one-statement path (a database key) and the ORM path (a key the caller
        # gives, which must not run as two autocommitted statements): neither leaves the
        # row behind when its audit row cannot be written.
        for values in ({"name": "poison"}, {"id": 777, "name": "poison"}):
            with pytest.raises(QueryError, match="rejected the statement"):
                await items.create(**values)
            assert await items.count(name="poison") == 0, values
        assert (await items.create(id=778, name="fine")).id == 778
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP FUNCTION IF EXISTS refuse_poison() CASCADE"))
        await db.dispose()


async def test_mapper_insert_listeners_keep_the_orm_flush(
    db: AsyncDatabaseManager, is_postgres: bool
) -> None:
    seen: list[str] = []

    def listener(mapper: Any, connection: Any, target: Item) -> None:
        seen.append(target.name)

    items = Repository(Item, db)
    await items.create(name="before")
    event.listen(Item, "before_insert", listener)
    try:
        with statements(db) as sent:
            await items.create(name="heard")
    finally:
        event.remove(Item, "before_insert", listener)
    assert seen == ["heard"]
    assert not one_statement_creates(sent)
    assert len(audit_inserts(sent)) == 1
    with statements(db) as sent:
        await items.create(name="after")
    assert bool(one_statement_creates(sent)) == is_postgres


async def test_a_flushs_audit_rows_are_one_insert(db: AsyncDatabaseManager) -> None:
    with statements(db) as sent:
        async with AsyncUnitOfWork(db, user_id="u4") as uow:
            uow.session.add_all([Item(name=f"n{i}", qty=i) for i in range(5)])
            await uow.flush()
            flushed = list(audit_inserts(sent))
            items = (await uow.session.scalars(select(Item).order_by(Item.id))).all()
            for item in items:
                item.qty += 10
    assert len(flushed) == 1  # five CREATE rows
    assert len(audit_inserts(sent)) == 2  # then five UPDATE rows at commit
    for item in items:
        chain = await chain_of(db, "t_item", item.id)
        assert [(r.action, r.chain_seq, r.user_id) for r in chain] == [
            ("CREATE", 1, "u4"),
            ("UPDATE", 2, "u4"),
        ]
        assert chain[1].old_values == {"qty": item.qty - 10}
    assert (await verify_audit_chain(db)).ok


async def test_one_chain_twice_in_a_batch_links_in_order(db: AsyncDatabaseManager) -> None:
    context = AuditContext.of("u5", None, None)
    rows = [
        audit_row(Item, action, "77", context, new={"qty": n}, changed=["qty"])
        for n, action in enumerate((AuditAction.CREATE, AuditAction.UPDATE, AuditAction.UPDATE))
    ]
    rows.insert(1, audit_row(Item, AuditAction.CREATE, "78", context, new={"qty": 0}))
    async with db.session() as session:
        await session.run_sync(write_audit_rows, rows)
        await session.commit()
    chain = await chain_of(db, "t_item", 77)
    assert [(r.chain_seq, r.new_values) for r in chain] == [
        (1, {"qty": 0}),
        (2, {"qty": 1}),
        (3, {"qty": 2}),
    ]
    assert (await verify_audit_chain(db)).ok


async def test_audited_bulk_create_rows_and_chain(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    with audit_context(user_id="u6"), statements(db) as sent:
        created = await items.bulk_create([{"name": f"b{i}", "qty": i} for i in range(30)])
    assert created == 30
    assert len(audit_inserts(sent)) == 1
    async with db.session() as session:
        found = (
            await session.scalars(select(AuditLog).where(AuditLog.action == "BULK_CREATE"))
        ).all()
    assert len(found) == 30
    assert {r.chain_seq for r in found} == {1} and {r.user_id for r in found} == {"u6"}
    assert (await verify_audit_chain(db)).ok
