"""Keyset pages in either direction: every row once, and on PostgreSQL read off the index."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Index, Integer, String, event, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asyncdb import AsyncDatabaseManager, Repository, TimestampMixin
from tests.integration.conftest import manager_for
from tests.integration.models import Item

ROWS = 5_000


class _Base(DeclarativeBase):
    pass


class Event(_Base, TimestampMixin):
    """Its own table (not in the matrix): ``created_at`` indexed, as a feed would have it."""

    __tablename__ = "t_keyset_event"
    __table_args__ = (Index("ix_t_keyset_event_created_at", "created_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


@contextmanager
def statements(db: AsyncDatabaseManager) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def listener(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", listener)


@pytest.mark.parametrize("order_by", ["-qty", "qty", "-created_at", "-id"])
async def test_keyset_walk_yields_every_row_once_in_order(
    db: AsyncDatabaseManager, order_by: str
) -> None:
    items = Repository(Item, db)
    base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    # Many ties on qty and created_at: the primary key decides between them.
    rows = [
        {"name": f"n{i}", "qty": i % 4, "created_at": base + dt.timedelta(days=i % 3)}
        for i in range(23)
    ]
    await items.bulk_create(rows)
    field, descending = order_by.lstrip("-"), order_by.startswith("-")
    everything = await items.find_by(limit=100)
    expected = [
        obj.id
        for obj in sorted(
            sorted(everything, key=lambda o: o.id),
            key=lambda o: getattr(o, field),
            reverse=descending,
        )
    ]
    walked: list[int] = []
    cursor: str | None = None
    while True:
        page = await items.paginate_keyset(after=cursor, limit=4, order_by=order_by)
        walked += [obj.id for obj in page.items]
        if not page.has_more:
            break
        cursor = page.next_cursor
    assert walked == expected


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[AsyncDatabaseManager]:
    db = manager_for(postgres_url, max_page_size=ROWS)
    await db.connect()
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.drop_all)
            await conn.run_sync(_Base.metadata.create_all)
            await conn.execute(
                text(
                    "INSERT INTO t_keyset_event (name, created_at, updated_at) "
                    "SELECT 'e' || g, timestamp '2026-01-01' + g * interval '1 second' "
                    "+ (g % 7) * interval '1 hour', now() FROM generate_series(1, :n) g"
                ),
                {"n": ROWS},
            )
            await conn.execute(text("ANALYZE t_keyset_event"))
        yield db
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.drop_all)
        await db.dispose()


@pytest.mark.parametrize("order_by", ["-id", "-created_at", "id", "created_at"])
async def test_postgres_keyset_pages_are_index_scans(
    pg: AsyncDatabaseManager, order_by: str
) -> None:
    events = Repository(Event, pg)
    first = await events.paginate_keyset(limit=50, order_by=order_by)
    deep = await events.paginate_keyset(limit=ROWS - 100, order_by=order_by)
    for cursor in (first.next_cursor, deep.next_cursor):
        with statements(pg) as seen:
            page = await events.paginate_keyset(after=cursor, limit=50, order_by=order_by)
        assert len(page.items) == 50 if cursor == first.next_cursor else 100 - 50
        ((sql, params),) = seen
        assert "NULLS" not in sql.upper()
        async with pg.engine.connect() as conn:
            plan = "\n".join(
                row[0] for row in (await conn.exec_driver_sql("EXPLAIN " + sql, params)).all()
            )
        assert "Seq Scan" not in plan, plan
        assert "Index Scan" in plan or "Index Only Scan" in plan, plan
        if order_by.endswith("created_at"):
            # The cursor's bound reaches the index as a range, not only as a filter.
            assert "Index Cond" in plan and "created_at" in plan, plan
