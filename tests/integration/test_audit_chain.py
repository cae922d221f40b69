"""The audit log's hash chain on every backend: valid after every write path, and each
kind of tampering (changed, deleted, inserted, reordered rows) caught at the right row."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, update

from asyncdb import (
    AsyncDatabaseManager,
    AuditAction,
    AuditLog,
    Repository,
    audit_context,
    cleanup_audit_logs,
    utcnow,
    verify_audit_chain,
)
from asyncdb._audit import TRUNCATED_MARKER, audit_row, write_audit_rows
from asyncdb._audit_chain import _heads_probing, _heads_scanning
from asyncdb._context import AuditContext
from tests.integration.models import Account, Item

COLUMNS = [c.key for c in AuditLog.__table__.columns if c.key != "id"]


async def item_history(db: AsyncDatabaseManager) -> tuple[int, list[AuditLog]]:
    """One item with four audit rows (CREATE, UPDATE, UPDATE, SOFT_DELETE)."""
    items = Repository(Item, db)
    item = await items.create(name="a", qty=1)
    await items.update(item.id, name="b")
    await items.update(item.id, qty=2)
    await items.delete(item.id)
    return item.id, await chain_of(db, "t_item", item.id)


async def chain_of(db: AsyncDatabaseManager, table: str, entity: object) -> list[AuditLog]:
    async with db.session() as session:
        stmt = (
            select(AuditLog)
            .where(AuditLog.table_name == table, AuditLog.entity_id == str(entity))
            .order_by(AuditLog.chain_seq)
        )
        return list((await session.scalars(stmt)).all())


async def tamper(db: AsyncDatabaseManager, *statements: Any) -> None:
    async with db.session() as session:
        for stmt in statements:
            await session.execute(stmt)
        await session.commit()


async def test_every_write_path_extends_the_entitys_chain(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    with audit_context(user_id="u1"):
        item = await items.create(name="a")
        await items.update(item.id, name="b")
        await items.delete(item.id)
        await items.restore(item.id)
        await items.bulk_update([{"id": item.id, "qty": 5}])
        await items.upsert({"id": item.id, "name": "c"}, conflict_on=["id"])
        await items.bulk_create([{"name": f"n{i}"} for i in range(5)])
        await items.delete(item.id, soft=False)
    rows = await chain_of(db, "t_item", item.id)
    assert [r.chain_seq for r in rows] == list(range(1, 8))
    assert rows[0].prev_hash is None
    assert all(b.prev_hash == a.row_hash for a, b in itertools.pairwise(rows))
    assert len({r.row_hash for r in rows}) == len(rows)
    report = await verify_audit_chain(db)
    assert report.ok, report.broken
    assert (report.rows, report.chains, report.unchained) == (12, 6, 0)
    assert (await verify_audit_chain(db, table_name="t_item", entity_id=item.id)).rows == 7


async def test_a_batch_links_every_entity_to_its_newest_row(db: AsyncDatabaseManager) -> None:
    """A bulk write's audit rows each extend their own chain at its newest link, past
    the head query's 512 entities per statement (and its padded last part)."""
    items = Repository(Item, db)
    count = 600
    with audit_context(user_id="u1"):
        await items.bulk_create([{"name": f"n{i}", "qty": i} for i in range(count)])
        ids = sorted(item.id for item in await items.get_all(limit=count))
        for qty in (-1, -2):
            await items.bulk_update([{"id": ident, "qty": qty} for ident in ids])
        await items.bulk_delete(ids[:5])
    async with db.session() as session:
        logged = (
            await session.scalars(
                select(AuditLog)
                .where(AuditLog.table_name == "t_item")
                .order_by(AuditLog.entity_id, AuditLog.chain_seq)
            )
        ).all()
    chains = {
        entity: list(rows) for entity, rows in itertools.groupby(logged, lambda r: r.entity_id)
    }
    assert sorted(chains) == sorted(str(ident) for ident in ids)
    for ident in ids:
        chain = chains[str(ident)]
        expected = 4 if ident in ids[:5] else 3
        assert [row.chain_seq for row in chain] == list(range(1, expected + 1)), ident
        assert [row.prev_hash for row in chain] == [None] + [row.row_hash for row in chain[:-1]]
    assert chains[str(ids[-1])][-1].new_values == {"qty": -2}
    report = await verify_audit_chain(db)
    assert report.ok, report.broken
    assert report.rows == count * 3 + 5


async def test_a_batch_writes_the_rows_that_one_row_at_a_time_writes(
    db: AsyncDatabaseManager,
) -> None:
    """However the audit writer sends a batch (on SQLite: linked in one query from 8
    rows, each row linking itself below that), the stored rows are the same, field by
    field: chains continued at their heads, two rows of one entity in order, JSON
    values as given."""
    ctx = AuditContext(user_id="ü", correlation_id="c-1", extra=MappingProxyType({"k": [1]}))
    moment = utcnow()

    def made() -> list[dict[str, Any]]:
        rows = [
            audit_row(
                Item,
                AuditAction.UPDATE,
                str(i % 9),
                ctx,
                old={"name": f"é{i}", "tags": {"b": 1, "a": [None, 1.5]}},
                new={"name": '"q"\n', "qty": i},
                changed=["qty", "name"],
            )
            for i in range(12)  # entities 0..8; 0, 1 and 2 twice
        ]
        for row in rows[::4]:
            row["old_values"] = None  # stored as SQL NULL, not the JSON null
        for row in rows:
            row["occurred_at"] = moment
        return rows

    for _ in range(2):  # entity 0 has a chain of two links already
        async with db.session() as session:
            await session.run_sync(write_audit_rows, made()[:1])
            await session.commit()

    async def stored(write: Callable[[Any, list[dict[str, Any]]], None]) -> list[tuple[Any, ...]]:
        async with db.session() as session:
            await session.run_sync(write, made())
            found = await session.execute(
                select(*(AuditLog.__table__.c[name] for name in COLUMNS)).order_by(
                    AuditLog.entity_id, AuditLog.chain_seq
                )
            )
            rows = [tuple(row) for row in found]
            nulls = await session.scalar(select(func.count()).where(AuditLog.old_values.is_(None)))
            assert nulls == 3 + 2, "a None JSON value must be stored as SQL NULL"
            await session.rollback()
        return rows

    def one_at_a_time(session: Any, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            write_audit_rows(session, [row])

    batch, single = await stored(write_audit_rows), await stored(one_at_a_time)
    assert batch == single
    assert len(batch) == 14
    first = [row for row in batch if row[COLUMNS.index("entity_id")] == "0"]
    assert [row[COLUMNS.index("chain_seq")] for row in first] == [1, 2, 3, 4]
    assert first[3][COLUMNS.index("old_values")] == {
        "name": "é9",
        "tags": {"a": [None, 1.5], "b": 1},
    }


async def test_both_head_queries_find_the_newest_link(db: AsyncDatabaseManager) -> None:
    """The probing query (a ``VALUES`` table, padded) and the scanning one (kept for
    MySQL, which writes ``VALUES ROW(...)``) find the same heads: entities with several
    links, one link, none, and an id that looks like a number."""
    ctx = AuditContext(user_id="u1")
    rows = [
        audit_row(Item, AuditAction.UPDATE, entity, ctx, new={"qty": n}, changed=["qty"])
        for entity, links in (("1", 3), ("2", 1), ("007", 2))
        for n in range(links)
    ]
    async with db.session() as session:
        await session.run_sync(write_audit_rows, rows)
        await session.commit()
    wanted = ["1", "2", "007", "7", "missing"]
    async with db.session() as session:
        found = {}
        for name, query in (("probing", _heads_probing), ("scanning", _heads_scanning)):
            result = await session.run_sync(
                lambda s, q=query: [tuple(r) for r in q(s.connection(), "t_item", wanted)]
            )
            found[name] = {entity: (seq, digest) for entity, seq, digest in result}
    chains = {e: await chain_of(db, "t_item", e) for e in ("1", "2", "007")}
    expected = {e: (chain[-1].chain_seq, chain[-1].row_hash) for e, chain in chains.items()}
    assert found["probing"] == found["scanning"] == expected
    assert {e: seq for e, (seq, _) in expected.items()} == {"1": 3, "2": 1, "007": 2}


async def test_a_changed_value_is_caught_at_its_row(db: AsyncDatabaseManager) -> None:
    _, rows = await item_history(db)
    target = rows[1]
    await tamper(
        db, update(AuditLog).where(AuditLog.id == target.id).values(new_values={"name": "evil"})
    )
    report = await verify_audit_chain(db)
    assert report.broken is not None
    assert (report.broken.row_id, report.broken.problem) == (target.id, "hash")
    assert report.broken.found == target.row_hash
    assert report.broken.expected != target.row_hash
    assert f"audit row {target.id}" in str(report.broken)


async def test_a_changed_who_or_when_is_caught(db: AsyncDatabaseManager) -> None:
    _, rows = await item_history(db)
    await tamper(db, update(AuditLog).where(AuditLog.id == rows[2].id).values(user_id="x"))
    assert (await verify_audit_chain(db)).broken.row_id == rows[2].id  # type: ignore[union-attr]
    await tamper(db, update(AuditLog).where(AuditLog.id == rows[2].id).values(user_id=None))
    assert (await verify_audit_chain(db)).ok
    later = rows[0].occurred_at + dt.timedelta(seconds=1)
    await tamper(db, update(AuditLog).where(AuditLog.id == rows[0].id).values(occurred_at=later))
    assert (await verify_audit_chain(db)).broken.row_id == rows[0].id  # type: ignore[union-attr]


async def test_a_deleted_row_is_caught(db: AsyncDatabaseManager) -> None:
    _, rows = await item_history(db)
    await tamper(db, delete(AuditLog).where(AuditLog.id == rows[1].id))
    broken = (await verify_audit_chain(db)).broken
    assert broken is not None
    assert (broken.row_id, broken.problem) == (rows[2].id, "sequence")
    assert (broken.expected, broken.found) == ("chain_seq 2", "chain_seq 3")


async def test_a_deleted_first_row_is_caught(db: AsyncDatabaseManager) -> None:
    _, rows = await item_history(db)
    await tamper(db, delete(AuditLog).where(AuditLog.id == rows[0].id))
    broken = (await verify_audit_chain(db)).broken
    assert broken is not None and (broken.row_id, broken.problem) == (rows[1].id, "start")


async def test_an_inserted_row_is_caught(db: AsyncDatabaseManager) -> None:
    _, rows = await item_history(db)
    forged = {c: getattr(rows[1], c) for c in COLUMNS}
    forged["chain_seq"] = 5  # a replay of row 2 appended after the head
    await tamper(db, insert(AuditLog).values(**forged))
    broken = (await verify_audit_chain(db)).broken
    assert broken is not None and broken.problem == "link" and broken.chain_seq == 5
    assert (broken.expected, broken.found) == (rows[3].row_hash, rows[0].row_hash)


async def test_an_inserted_row_in_the_middle_is_caught(db: AsyncDatabaseManager) -> None:
    _, rows = await item_history(db)
    # Make room at chain_seq 3 (highest first, for the unique index) and put a row there.
    for row in reversed(rows[2:]):
        await tamper(
            db, update(AuditLog).where(AuditLog.id == row.id).values(chain_seq=row.chain_seq + 1)
        )
    forged = {c: getattr(rows[1], c) for c in COLUMNS}
    forged.update(chain_seq=3, prev_hash=rows[1].row_hash, new_values={"qty": 99})
    await tamper(db, insert(AuditLog).values(**forged))
    broken = (await verify_audit_chain(db)).broken
    assert broken is not None and broken.chain_seq == 3 and broken.problem == "hash"


async def test_reordered_rows_are_caught(db: AsyncDatabaseManager) -> None:
    _, rows = await item_history(db)
    second, third = rows[1], rows[2]
    await tamper(
        db,
        update(AuditLog).where(AuditLog.id == second.id).values(chain_seq=-1),
        update(AuditLog).where(AuditLog.id == third.id).values(chain_seq=2),
        update(AuditLog).where(AuditLog.id == second.id).values(chain_seq=3),
    )
    broken = (await verify_audit_chain(db)).broken
    assert broken is not None
    assert (broken.row_id, broken.problem) == (third.id, "link")
    assert (broken.expected, broken.found) == (rows[0].row_hash, second.row_hash)


async def test_a_row_stripped_of_its_chain_is_caught(db: AsyncDatabaseManager) -> None:
    _, rows = await item_history(db)
    await tamper(
        db,
        update(AuditLog)
        .where(AuditLog.id == rows[3].id)
        .values(chain_seq=None, prev_hash=None, row_hash=None),
    )
    report = await verify_audit_chain(db)
    assert report.unchained == 1
    assert report.broken is not None
    assert (report.broken.row_id, report.broken.problem) == (rows[3].id, "unchained")


async def test_retention_leaves_a_verifiable_chain_with_a_checkpoint(
    db: AsyncDatabaseManager,
) -> None:
    account = await Repository(Account, db).create(email="a@x")
    old = utcnow() - dt.timedelta(days=40)
    ctx = AuditContext()
    # Three old links on item 1, then two recent ones: retention removes the prefix only.
    made = [
        audit_row(Item, AuditAction.UPDATE, "1", ctx, new={"qty": i}, changed=["qty"])
        for i in range(5)
    ]
    for row in made[:3]:
        row["occurred_at"] = old
    async with db.session() as session:
        await session.run_sync(write_audit_rows, made)
        await session.commit()
    assert (await verify_audit_chain(db)).ok
    assert await cleanup_audit_logs(db, retention_days=30, batch_size=2) == 3
    left = await chain_of(db, "t_item", 1)
    assert [r.chain_seq for r in left] == [4, 5]
    report = await verify_audit_chain(db)
    assert report.ok, report.broken
    assert report.checkpoints == 2  # two batches, each anchoring where item 1 now starts
    checkpoints = await chain_of(db, "asyncdb_audit_log", "checkpoint")
    assert [r.action for r in checkpoints] == ["CHECKPOINT", "CHECKPOINT"]
    assert checkpoints[-1].new_values is not None
    assert checkpoints[-1].new_values["chains"][0]["seq"] == 3
    # The checkpoint is evidence too: changing it breaks its own chain.
    await tamper(
        db,
        update(AuditLog)
        .where(AuditLog.id == checkpoints[-1].id)
        .values(new_values={"chains": [{"table": "t_item", "entity_id": "1", "seq": 3}]}),
    )
    broken = (await verify_audit_chain(db)).broken
    assert broken is not None and broken.row_id == checkpoints[-1].id
    assert (await chain_of(db, "t_account", account.id))[0].chain_seq == 1


async def test_head_digest_is_an_anchor_later_rows_do_not_move(db: AsyncDatabaseManager) -> None:
    await item_history(db)
    anchor = await verify_audit_chain(db)
    assert anchor.last_id is not None
    await Repository(Item, db).create(name="later")
    again = await verify_audit_chain(db, until_id=anchor.last_id)
    assert (again.head_digest, again.rows) == (anchor.head_digest, anchor.rows)
    assert (await verify_audit_chain(db)).head_digest != anchor.head_digest


async def test_numbers_hash_the_same_after_the_round_trip(db: AsyncDatabaseManager) -> None:
    # PostgreSQL's JSONB gives 1e100 back as a 101-digit integer and -0.0 as 0.
    odd = {"tenth": 0.1, "big": 1e100, "neg_zero": -0.0, "huge": 2**70, "tiny": 1.5e-7}
    with audit_context(**odd):
        item = await Repository(Item, db).create(name="n", qty=2**31 - 1)
    report = await verify_audit_chain(db)
    assert report.ok, report.broken
    row = (await chain_of(db, "t_item", item.id))[0]
    assert row.extra is not None
    assert row.extra["big"] == int(1e100)  # the float's exact value, as an integer
    assert row.extra["tenth"] == 0.1 and row.extra["huge"] == 2**70


async def test_a_truncated_value_is_hashed_as_stored(db: AsyncDatabaseManager) -> None:
    # The chain covers the marker the log stores, not the value the application wrote.
    Item.__audit_max_value_bytes__ = 16
    try:
        items = Repository(Item, db)
        item = await items.create(name="x" * 40)
        await items.update(item.id, name="y" * 50, qty=3)
    finally:
        del Item.__audit_max_value_bytes__
    rows = await chain_of(db, "t_item", item.id)
    assert rows[0].new_values is not None and rows[1].old_values is not None
    assert rows[0].new_values["name"] == {TRUNCATED_MARKER: {"bytes": 40, "head": "xx"}}
    assert rows[1].old_values["name"] == rows[0].new_values["name"]
    report = await verify_audit_chain(db)
    assert report.ok, report.broken
    assert report.rows == 2
    # The stored marker is evidence like any value: changing it is caught at its row.
    forged = {**rows[1].new_values, "name": {TRUNCATED_MARKER: {"bytes": 50, "head": "zz"}}}
    await tamper(db, update(AuditLog).where(AuditLog.id == rows[1].id).values(new_values=forged))
    broken = (await verify_audit_chain(db)).broken
    assert broken is not None and broken.row_id == rows[1].id


@pytest.mark.requires("blocking_locks")  # concurrent standalone updates of one row
async def test_concurrent_writers_of_one_entity_never_fork_its_chain(
    db: AsyncDatabaseManager,
) -> None:
    items = Repository(Item, db)
    shared = await items.create(name="shared", qty=0)
    others = [await items.create(name=f"o{i}") for i in range(4)]

    async def writer(n: int) -> None:
        await items.update(shared.id, qty=n)  # each its own transaction, same row
        await items.update(others[n % 4].id, qty=n)

    await asyncio.gather(*(writer(n) for n in range(1, 13)))
    rows = await chain_of(db, "t_item", shared.id)
    assert [r.chain_seq for r in rows] == list(range(1, 14))
    assert all(b.prev_hash == a.row_hash for a, b in itertools.pairwise(rows))
    report = await verify_audit_chain(db)
    assert report.ok, report.broken
    assert report.rows == 1 + 4 + 24
