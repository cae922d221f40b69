"""SQLite: a ROLLBACK goes to the driver only when a transaction is open (each is a
round trip to aiosqlite's thread), and every open transaction is still rolled back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiosqlite
import pytest
from sqlalchemy import text

from asyncdb import AsyncDatabaseManager, AsyncUnitOfWork, Repository
from tests.integration.models import Item

pytestmark = pytest.mark.parametrize("backend", ["sqlite-file", "sqlite-memory"], indirect=True)


@contextmanager
def driver_rollbacks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Each ROLLBACK aiosqlite runs, as whether SQLite had a transaction open."""
    seen: list[bool] = []
    rollback = aiosqlite.Connection.rollback

    async def counted(self: aiosqlite.Connection) -> None:
        seen.append(self.in_transaction)
        await rollback(self)

    monkeypatch.setattr(aiosqlite.Connection, "rollback", counted)
    yield seen


async def test_reads_and_committed_writes_send_no_rollback(
    db: AsyncDatabaseManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = Repository(Item, db, audit=False)
    with driver_rollbacks(monkeypatch) as seen:
        created = await items.create(Item(name="a", qty=1))
        assert (await items.get_by_id(created.id)).name == "a"
        assert (await items.paginate(1, 10)).total == 1
        async with AsyncUnitOfWork(db) as uow:
            await Repository(Item, db, audit=False).create(Item(name="b", qty=2))
            await uow.commit()
    assert seen == []


async def test_an_open_transaction_is_still_rolled_back(
    db: AsyncDatabaseManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = Repository(Item, db, audit=False)
    with driver_rollbacks(monkeypatch) as seen:
        with pytest.raises(RuntimeError, match="boom"):
            async with AsyncUnitOfWork(db):
                await items.create(Item(name="lost", qty=1))
                raise RuntimeError("boom")
        async with db.engine.connect() as conn:  # BEGIN IMMEDIATE, asyncdb's
            await conn.execute(
                text(
                    "INSERT INTO t_item (name, qty, created_at, updated_at) "
                    "VALUES ('raw', 1, '2026-01-01', '2026-01-01')"
                )
            )
            # closed without a commit: rolled back
    assert seen == [True, True]
    assert await items.count() == 0
