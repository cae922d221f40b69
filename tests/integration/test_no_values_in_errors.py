"""No row value in any error text, traceback or chained ``params`` (issue 14, item 3).

Runs on every backend and, in CI, on the lowest supported Python with SQLAlchemy 2.0,
whose wrappers copy the driver's DETAIL text into their own messages.
"""

from __future__ import annotations

import traceback
import uuid
from typing import Any

import pytest
from sqlalchemy import insert, text

from asyncdb import AsyncDatabaseManager, AsyncDBError, Repository
from tests.integration.models import Account, Item


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return seen


def _assert_hidden(exc: BaseException, secret: str) -> None:
    assert secret not in "".join(traceback.format_exception(exc))
    for link in _chain(exc):
        assert secret not in str(link)
        assert secret not in repr(getattr(link, "params", None))
        assert all(secret not in str(arg) for arg in link.args)


async def test_unique_violation_on_every_write_path(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    secret = uuid.uuid4().hex
    await items.create(name="a", sku=secret)
    other = await items.create(name="b")
    attempts: list[Any] = [
        lambda: items.create(name="b", sku=secret),
        lambda: items.bulk_create([{"name": "b", "sku": secret}]),
        lambda: items.update(other.id, sku=secret),
        lambda: items.bulk_update([{"id": other.id, "sku": secret}]),
        lambda: items.upsert({"id": other.id, "name": "b", "sku": secret}, conflict_on=["id"]),
    ]
    for attempt in attempts:
        with pytest.raises(AsyncDBError) as info:
            await attempt()
        _assert_hidden(info.value, secret)


async def test_not_null_failing_row_is_hidden(db: AsyncDatabaseManager) -> None:
    secret = uuid.uuid4().hex
    with pytest.raises(AsyncDBError) as info:
        async with db.session() as session:
            await session.execute(
                text("INSERT INTO t_account (email, password_hash, balance) VALUES (NULL, :p, 0)"),
                {"p": secret},
            )
    _assert_hidden(info.value, secret)


async def test_unique_violation_in_hand_written_sql_is_hidden(db: AsyncDatabaseManager) -> None:
    secret = uuid.uuid4().hex
    with pytest.raises(AsyncDBError) as info:
        async with db.session() as session:
            await session.execute(insert(Account).values(email=secret))
            await session.execute(insert(Account).values(email=secret))
    _assert_hidden(info.value, secret)
