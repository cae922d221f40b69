"""bulk_upsert sends one multi-row INSERT ... ON CONFLICT per batch, with the same audit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Integer, String, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asyncdb import (
    AsyncDatabaseManager,
    Audited,
    AuditLog,
    Repository,
    ValidationError,
    audit_context,
    get_audit_logs,
    verify_audit_chain,
)
from asyncdb._schema import toolkit_metadata
from tests.integration.conftest import empty_tables, manager_for
from tests.integration.models import Item, Kind

#: Values that differ between two runs by the clock alone.
_CLOCK = {"created_at", "updated_at", "deleted_at"}


@contextmanager
def inserts_into(db: AsyncDatabaseManager, table: str) -> Iterator[list[int]]:
    """One entry per INSERT into ``table`` sent to the database."""
    sent: list[int] = []

    def listener(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: Any) -> None:
        if statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()} "):
            sent.append(len(params) if many else 1)

    event.listen(db.engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield sent
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", listener)


async def test_one_statement_per_batch(db: AsyncDatabaseManager) -> None:
    kinds = Repository(Kind, db)
    rows = [{"namespace": "n", "code": f"c{i}", "label": "x"} for i in range(250)]
    with inserts_into(db, "t_kind") as sent:
        done = await kinds.bulk_upsert(rows, conflict_on=["namespace", "code"], batch_size=100)
    assert done == 250
    assert len(sent) == 3  # was 250 on SQLite: one statement per row
    changed = [{**row, "label": "y"} for row in rows]
    with inserts_into(db, "t_kind") as sent:
        await kinds.bulk_upsert(changed, conflict_on=["namespace", "code"], batch_size=100)
    assert len(sent) == 3
    stored = await kinds.find_by(limit=1000)
    assert len(stored) == 250 and {k.label for k in stored} == {"y"}


def _comparable(log: AuditLog) -> tuple[Any, ...]:
    def strip(values: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if values is None else {k: v for k, v in values.items() if k not in _CLOCK}

    changed = [f for f in log.changed_fields or [] if f not in _CLOCK]
    return (log.action, log.entity_id, strip(log.old_values), strip(log.new_values), changed)


async def _upsert_story(db: AsyncDatabaseManager, batch_size: int) -> list[tuple[Any, ...]]:
    items = Repository(Item, db)
    seed = [{"name": f"old{i}", "sku": f"s{i}", "qty": i} for i in range(6)]
    assert await items.bulk_create(seed) == 6
    gone = (await items.find_by(sku="s5"))[0]
    await items.delete(gone.id)  # soft: the upsert brings it back
    rows = [
        {"sku": "s0", "name": "old0", "qty": 0},  # unchanged
        {"sku": "s1", "name": "new1", "qty": 1},  # name changed
        {"sku": "s2", "name": "old2", "qty": 20},  # qty changed
        {"sku": "s5", "name": "back", "qty": 5},  # soft-deleted before
        *({"sku": f"t{i}", "name": f"fresh{i}", "qty": i} for i in range(5)),  # inserts
    ]
    with audit_context(user_id="u", correlation_id="c"):
        assert await items.bulk_upsert(rows, conflict_on=["sku"], batch_size=batch_size) == 9
    report = await verify_audit_chain(db)
    assert report.ok, report.broken
    logs = await get_audit_logs(db, action="UPSERT", limit=1000)
    assert all(log.user_id == "u" and log.correlation_id == "c" for log in logs)
    assert (await items.get_by_id(gone.id)).name == "back"
    return sorted((_comparable(log) for log in logs), key=lambda t: int(t[1] or 0))


def _without_new_ids(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows with the ids of inserted rows left out, in a fixed order.

    MariaDB/MySQL's ``INSERT ... ON DUPLICATE KEY UPDATE`` takes an AUTO_INCREMENT value
    for every row it tries, also those that turn into updates, so which ids new rows get
    depends on how the rows were batched.
    """
    out = []
    for action, entity, old, new, changed in rows:
        if old is None:
            entity, new = None, {k: v for k, v in (new or {}).items() if k != "id"}
        out.append((action, entity, old, new, changed))
    return sorted(out, key=repr)


async def test_audit_rows_match_the_row_by_row_path(db: AsyncDatabaseManager) -> None:
    by_row = await _upsert_story(db, batch_size=1)
    await empty_tables(db)
    batched = await _upsert_story(db, batch_size=100)
    if db.backend == "mysql":
        assert _without_new_ids(batched) == _without_new_ids(by_row)
    else:
        assert batched == by_row
    assert len(batched) == 9
    assert [t[2] for t in batched[:4]] == [
        {},
        {"name": "old1"},
        {"qty": 2},
        {"name": "old5"},
    ]


async def test_upsert_on_the_primary_key_audits_each_row(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    await items.bulk_create([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    rows = [{"id": 2, "name": "b2"}, {"id": 7, "name": "g"}, {"id": 1, "name": "a"}]
    with audit_context(user_id="u"), inserts_into(db, "t_item") as sent:
        assert await items.bulk_upsert(rows, conflict_on=["id"]) == 3
    assert len(sent) == 1
    logs = await get_audit_logs(db, action="UPSERT", limit=10)
    by_entity = {log.entity_id: _comparable(log) for log in logs}
    assert by_entity["2"][2:4] == ({"name": "b"}, {"name": "b2"})
    assert by_entity["1"][2:4] == ({}, {})
    assert by_entity["7"][2] is None and (by_entity["7"][3] or {})["name"] == "g"
    assert {i.id: i.name for i in await items.find_by(limit=10)} == {1: "a", 2: "b2", 7: "g"}


class _NocaseBase(DeclarativeBase):
    pass


class Tag(_NocaseBase, Audited):
    """A case-insensitive unique code: an upsert keeps the stored spelling."""

    __tablename__ = "t_nocase_tag"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(20, collation="NOCASE"), unique=True)
    label: Mapped[str] = mapped_column(String(20), default="")


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[AsyncDatabaseManager]:
    db = manager_for(f"sqlite+aiosqlite:///{tmp_path / 'nocase.db'}")
    await db.connect()
    async with db.engine.begin() as conn:
        await conn.run_sync(toolkit_metadata.create_all)
        await conn.run_sync(_NocaseBase.metadata.create_all)
    try:
        yield db
    finally:
        await db.dispose()


async def test_rows_whose_conflict_values_come_back_changed_are_matched(
    sqlite_db: AsyncDatabaseManager,
) -> None:
    tags = Repository(Tag, sqlite_db)
    await tags.bulk_create([{"code": "ABC", "label": "a"}, {"code": "Def", "label": "d"}])
    rows = [{"code": "abc", "label": "a2"}, {"code": "new", "label": "n"}, {"code": "DEF"}]
    with audit_context(user_id="u"):
        assert await tags.bulk_upsert(rows, conflict_on=["code"]) == 3
    async with sqlite_db.session(read_only=True) as session:
        stored = {t.code: (t.id, t.label) for t in (await session.scalars(select(Tag))).all()}
    assert stored == {"ABC": (1, "a2"), "Def": (2, ""), "new": (3, "n")}
    logs = await get_audit_logs(sqlite_db, action="UPSERT", limit=10)
    assert sorted(log.entity_id or "" for log in logs) == ["1", "2", "3"]
    assert (await verify_audit_chain(sqlite_db)).ok


async def test_refusals_name_the_first_bad_row_in_row_order(db: AsyncDatabaseManager) -> None:
    # Plain batches are checked a column at a time; the refusals and their order stay
    # those of the row-by-row checks.
    kinds = Repository(Kind, db, audit=False)
    conflict = ["namespace", "code"]
    rows = [{"namespace": "a", "code": str(i), "label": "x"} for i in range(6)]
    with pytest.raises(ValidationError, match=r"Row 4 repeats the conflict_on values of row 1"):
        await kinds.bulk_upsert([*rows[:4], rows[1], *rows[4:]], conflict_on=conflict)
    no_code = [{"namespace": "a", "label": "x"} for _ in range(3)]
    with pytest.raises(ValidationError, match=r"Row 0: bulk_upsert rows need .*'code'"):
        await kinds.bulk_upsert(no_code, conflict_on=conflict)
    mixed = [dict(row) for row in rows]
    mixed[1] = {"namespace": "a", "label": "x"}  # names other fields: row by row
    with pytest.raises(ValidationError, match=r"Row 1: bulk_upsert rows need"):
        await kinds.bulk_upsert(mixed, conflict_on=conflict)
    repeated_then_bad = [*rows[:3], rows[0], {**rows[4], "label": 5}]
    with pytest.raises(ValidationError, match=r"Row 3 repeats"):
        await kinds.bulk_upsert(repeated_then_bad, conflict_on=conflict)
    bad_then_repeated = [*rows[:2], {**rows[2], "label": 5}, rows[0]]
    with pytest.raises(ValidationError, match=r"Row 2: label"):
        await kinds.bulk_upsert(bad_then_repeated, conflict_on=conflict)
    assert await kinds.count() == 0
    assert await kinds.bulk_upsert(rows, conflict_on=conflict, batch_size=4) == 6
