"""Tasks and loops (issue 14, items 14-15): wait_for inside a unit, a second loop,
repository audit defaults under concurrency."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    Repository,
    TransactionError,
    get_audit_logs,
)
from asyncdb._manager import StateError
from tests.integration.models import Item


async def test_wait_for_inside_a_unit_uses_the_unit(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    async with AsyncUnitOfWork(db) as uow:
        created = await asyncio.wait_for(items.create(name="in-unit"), 5)
        got = await asyncio.wait_for(items.get(created.id), 5)
        assert got is created  # the same session: the unit's identity map
        nested = await asyncio.wait_for(asyncio.wait_for(items.count(), 5), 5)
        assert nested == 1
        await asyncio.wait_for(uow.flush(), 5)
    assert await items.count() == 1


async def test_wait_for_work_is_rolled_back_with_the_unit(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db):
            await asyncio.wait_for(items.create(name="undone"), 5)
            raise Boom
    assert await items.count() == 0


async def test_tasks_created_inside_a_unit_still_cannot_share_it(
    db: AsyncDatabaseManager,
) -> None:
    items = Repository(Item, db)
    async with AsyncUnitOfWork(db) as uow:
        with pytest.raises(TransactionError, match=r"(?i)open a unit per task"):
            await asyncio.gather(items.count(), items.count())
        with pytest.raises(TransactionError, match="another task"):
            await asyncio.create_task(_touch(uow))


async def _touch(uow: AsyncUnitOfWork) -> Any:
    return uow.session


async def test_manager_used_from_a_second_loop_is_a_state_error(
    db: AsyncDatabaseManager,
) -> None:
    errors: list[BaseException] = []

    def other_loop() -> None:
        async def use() -> None:
            async with db.session():
                pass

        try:
            asyncio.run(use())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_loop)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], StateError)
    assert "another event loop" in str(errors[0])
    # The manager still works on its own loop.
    assert await Repository(Item, db).count() == 0


async def test_repository_defaults_are_task_local(db: AsyncDatabaseManager) -> None:
    shared = Repository(Item, db)
    shared.set_context(user_id="startup")  # inherited by the tasks created below

    async def request(n: int) -> None:
        if n % 2:
            shared.set_context(user_id=f"user-{n}")
        await asyncio.sleep(0)  # let other requests interleave
        await shared.create(name=f"row-{n}")

    await asyncio.gather(*(request(n) for n in range(50)))
    rows = await get_audit_logs(db, limit=1000)
    by_name = {r.new_values["name"]: r.user_id for r in rows if r.new_values}
    assert len(by_name) == 50
    for n in range(50):
        expected = f"user-{n}" if n % 2 else "startup"
        assert by_name[f"row-{n}"] == expected
