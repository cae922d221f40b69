"""bulk_upsert on PostgreSQL sends a batch as one ``INSERT … SELECT FROM unnest(…)``
(asyncdb._upsert_unnest): the same rows and audit as the multi-row VALUES form, and the
VALUES form wherever a column type is not carried by an array parameter."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Boolean, Float, LargeBinary, Numeric, String, Text, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import asyncdb._upsert
from asyncdb import (
    AsyncDatabaseManager,
    AsyncDBError,
    ConflictError,
    Repository,
    UTCDateTime,
    audit_context,
    get_audit_logs,
    verify_audit_chain,
)
from tests.integration.conftest import connect_fresh, empty_tables
from tests.integration.models import Account, Color, Order
from tests.integration.test_repository import counting


class _Base(DeclarativeBase):
    pass


class Reading(_Base):
    """A column of each type the unnest form carries (its own table, not the matrix's)."""

    __tablename__ = "t_unnest_reading"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20), unique=True)
    token: Mapped[uuid.UUID | None] = mapped_column(default=None)
    amount: Mapped[decimal.Decimal | None] = mapped_column(Numeric(30, 10), default=None)
    ratio: Mapped[float | None] = mapped_column(Float, default=None)
    blob: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    due: Mapped[dt.date | None] = mapped_column(default=None)
    at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, default=None)
    ok: Mapped[bool | None] = mapped_column(Boolean, default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)


@pytest.fixture
async def pg(postgres_url: str, schema_templates: Path) -> AsyncIterator[AsyncDatabaseManager]:
    db = await connect_fresh(postgres_url, schema_templates)
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.drop_all)
            await conn.run_sync(_Base.metadata.create_all)
        yield db
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.drop_all)
        await db.dispose()


def inserts(seen: list[str]) -> list[str]:
    """The INSERTs into the test tables among the statements ``counting`` saw."""
    return [s for s in seen if s.lstrip().upper().startswith("INSERT INTO T_")]


def _rows(version: int) -> list[dict[str, Any]]:
    at = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)
    rows = []
    for i in range(120):
        full = (i + version) % 3 != 0  # every third row leaves its columns NULL
        rows.append(
            {
                "code": f"r{i}",
                "token": uuid.UUID(int=i * 7 + version) if full else None,
                "amount": decimal.Decimal(f"{i}.{version}000000001") if full else None,
                "ratio": i / 7 + version if full else None,
                "blob": bytes([i % 256, version, 0]) if full else None,
                "due": dt.date(2026, 1, 1) + dt.timedelta(days=i + version) if full else None,
                "at": at + dt.timedelta(seconds=i * version) if full else None,
                "ok": (i % 2 == 0) if full else None,
                "note": f"ünïcode {i} ' \" \\ v{version}" if full else None,
            }
        )
    return rows


async def _story(db: AsyncDatabaseManager) -> list[tuple[Any, ...]]:
    """Insert 120 rows, then upsert them again changed plus 30 new: the table after."""
    readings = Repository(Reading, db, audit=False)
    assert await readings.bulk_upsert(_rows(1), conflict_on=["code"], batch_size=50) == 120
    again = [*_rows(2), *({"code": f"n{i}", "note": "new"} for i in range(30))]
    assert await readings.bulk_upsert(again, conflict_on=["code"], batch_size=50) == 150
    async with db.session(read_only=True) as session:
        stored = (await session.scalars(select(Reading).order_by(Reading.code))).all()
    columns = [c.key for c in Reading.__table__.columns if c.key != "id"]
    return [tuple(getattr(r, c) for c in columns) for r in stored]


async def test_batches_are_one_unnest_statement_and_write_what_values_write(
    pg: AsyncDatabaseManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    with counting(pg) as seen:
        by_unnest = await _story(pg)
    # 120 rows in batches of 50, then 150: 3 + 3 statements (the new rows name other
    # fields: a group of their own), every one of them the unnest form.
    assert len(inserts(seen)) == 7
    assert all("FROM unnest(" in statement for statement in inserts(seen))
    async with pg.engine.begin() as conn:
        await conn.run_sync(_Base.metadata.drop_all)
        await conn.run_sync(_Base.metadata.create_all)
    monkeypatch.setattr(asyncdb._upsert, "can_unnest", lambda *args: False)
    with counting(pg) as seen:
        by_values = await _story(pg)
    assert inserts(seen) and not any("FROM unnest(" in statement for statement in inserts(seen))
    assert by_unnest == by_values
    assert len(by_unnest) == 150
    assert by_unnest[0][-1] == "new" and by_unnest[-1][-1] == "ünïcode 99 ' \" \\ v2"


async def test_audit_rows_are_those_of_the_values_form(
    pg: AsyncDatabaseManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = Repository(Account, pg)

    async def story() -> list[tuple[Any, ...]]:
        await accounts.bulk_create([{"id": i, "email": f"a{i}@x"} for i in range(1, 6)])
        rows = [{"id": i, "email": f"a{i}@x" if i % 2 else f"b{i}@x"} for i in range(1, 9)]
        with audit_context(user_id="u"), counting(pg) as seen:
            assert await accounts.bulk_upsert(rows, conflict_on=["id"]) == 8
        assert (await verify_audit_chain(pg)).ok
        logs = await get_audit_logs(pg, action="UPSERT", limit=100)
        forms.append({"unnest" if "FROM unnest(" in s else "values" for s in inserts(seen)})
        return [
            (log.entity_id, log.old_values, log.new_values, log.changed_fields)
            for log in sorted(logs, key=lambda log: int(log.entity_id or 0))
        ]

    forms: list[set[str]] = []
    by_unnest = await story()
    await empty_tables(pg)
    monkeypatch.setattr(asyncdb._upsert, "can_unnest", lambda *args: False)
    by_values = await story()
    assert forms == [{"unnest"}, {"values"}]
    assert by_unnest == by_values
    olds = [row[1] for row in by_unnest[:5]]
    assert olds == [{}, {"email": "a2@x"}, {}, {"email": "a4@x"}, {}]
    assert [row[1] for row in by_unnest[5:]] == [None, None, None]  # inserted


async def test_a_type_arrays_do_not_carry_goes_as_multi_row_values(
    pg: AsyncDatabaseManager,
) -> None:
    await Repository(Account, pg, audit=False).create(Account(id=1, email="a@x"))
    orders = Repository(Order, pg, audit=False)
    rows = [{"id": i, "account_id": 1, "color": Color.RED} for i in range(1, 4)]  # an Enum
    with counting(pg) as seen:
        assert await orders.bulk_upsert(rows, conflict_on=["id"]) == 3
    assert len(inserts(seen)) == 1 and "FROM unnest(" not in inserts(seen)[0]
    assert [o.color for o in await orders.find_by(order_by="id")] == [Color.RED] * 3


async def test_a_refused_batch_names_its_row_and_leaves_nothing(pg: AsyncDatabaseManager) -> None:
    readings = Repository(Reading, pg, audit=False)
    await readings.bulk_create([{"id": i, "code": f"r{i}"} for i in range(1, 11)])
    # Upserted on code, but row 57 takes an id another row holds: the server refuses
    # the unnest statement, and the VALUES replay finds and names the row.
    rows = [{"id": 100 + i, "code": f"x{i}"} for i in range(80)]
    rows[57]["id"] = 3
    with pytest.raises(AsyncDBError, match=r"Row 57") as refused:
        await readings.bulk_upsert(rows, conflict_on=["code"], batch_size=100)
    assert isinstance(refused.value, ConflictError)
    assert await readings.count() == 10
