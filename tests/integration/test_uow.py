"""AsyncUnitOfWork on every backend: commit, rollback, savepoints, nesting, callbacks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    ConfigurationError,
    ConflictError,
    Repository,
    TransactionError,
    audit_context,
    get_audit_context,
    get_audit_logs,
)
from asyncdb._context import current_unit
from asyncdb._uow import UnitState
from tests.integration.conftest import names, wait_until
from tests.integration.models import Item


class Boom(Exception):
    """Raised by tests to abort a block."""


async def item_count(db: AsyncDatabaseManager) -> int:
    async with db.session(read_only=True) as session:
        return int(await session.scalar(select(func.count()).select_from(Item)) or 0)


def transactions(db: AsyncDatabaseManager) -> dict[str, Any]:
    figures: dict[str, Any] = db.metrics.snapshot()["transactions"]
    return figures


# -- commit and rollback ---------------------------------------------------------------


async def test_clean_exit_commits(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db) as uow:
        await uow.get_repository(Item).create(name="a")
        uow.session.add(Item(name="b"))
    assert uow.state is UnitState.CLOSED
    assert await names(db) == ["a", "b"]


async def test_exception_rolls_back_and_is_reraised(db: AsyncDatabaseManager) -> None:
    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db) as uow:
            await uow.get_repository(Item).create(name="a")
            await uow.flush()
            raise Boom
    assert await names(db) == []
    assert db.pool_status()["checked_out"] == 0


async def test_explicit_commit_and_rollback_keep_the_unit_open(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db) as uow:
        items = uow.get_repository(Item)
        await items.create(name="kept")
        await uow.commit()
        await items.create(name="undone")
        await uow.rollback()
        assert await items.count() == 1
        await items.create(name="after")
    assert await names(db) == ["after", "kept"]


async def test_flush_sends_sql_without_committing(db: AsyncDatabaseManager) -> None:
    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db) as uow:
            item = Item(name="flushed")
            uow.session.add(item)
            await uow.flush()
            assert item.id is not None
            seen = await uow.session.scalar(select(Item.name).where(Item.id == item.id))
            assert seen == "flushed"
            raise Boom
    assert await names(db) == []


async def test_error_from_the_database_rolls_back_the_whole_unit(db: AsyncDatabaseManager) -> None:
    await Repository(Item, db).create(name="first", sku="dup")
    with pytest.raises(ConflictError):
        async with AsyncUnitOfWork(db) as uow:
            items = uow.get_repository(Item)
            await items.create(name="second")
            await items.create(name="third", sku="dup")
    assert await names(db) == ["first"]


async def test_a_unit_can_be_entered_only_once(db: AsyncDatabaseManager) -> None:
    uow = AsyncUnitOfWork(db)
    async with uow:
        pass
    with pytest.raises(TransactionError, match="entered once"):
        async with uow:
            pass


async def test_bad_isolation_level_is_a_validation_error(db: AsyncDatabaseManager) -> None:
    with pytest.raises(ConfigurationError, match="isolation_level"):
        AsyncUnitOfWork(db, isolation_level="CHAOS")


# -- savepoints ------------------------------------------------------------------------


@pytest.mark.requires("savepoint")
async def test_savepoint_rollback_keeps_the_outer_work(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db) as uow:
        items = uow.get_repository(Item)
        await items.create(name="outer")
        with pytest.raises(Boom):
            async with uow.savepoint():
                await items.create(name="inner")
                raise Boom
        await items.create(name="outer-again")
        async with uow.savepoint():
            await items.create(name="inner-kept")
    assert await names(db) == ["inner-kept", "outer", "outer-again"]


@pytest.mark.requires("savepoint")
async def test_savepoint_survives_a_constraint_violation(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db) as uow:
        items = uow.get_repository(Item)
        await items.create(name="one", sku="s1")
        with pytest.raises(ConflictError):
            async with uow.savepoint():
                await items.create(name="two", sku="s1")
        # the transaction is usable after the savepoint rolled back
        await items.create(name="three", sku="s3")
    assert await names(db) == ["one", "three"]


@pytest.mark.requires("savepoint")
async def test_nested_savepoints(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db) as uow:
        items = uow.get_repository(Item)
        async with uow.savepoint():
            await items.create(name="level1")
            with pytest.raises(Boom):
                async with uow.savepoint():
                    await items.create(name="level2")
                    raise Boom
        with pytest.raises(Boom):
            async with uow.savepoint():
                await items.create(name="gone1")
                async with uow.savepoint():
                    await items.create(name="gone2")
                raise Boom
    assert await names(db) == ["level1"]


@pytest.mark.requires("savepoint")
async def test_nested_unit_is_a_savepoint(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db, user_id="outer") as outer:
        await outer.get_repository(Item).create(name="outer")
        with pytest.raises(Boom):
            async with AsyncUnitOfWork(db) as inner:
                assert inner.is_nested
                assert inner.session is outer.session
                assert current_unit() is inner
                await inner.get_repository(Item).create(name="inner")
                raise Boom
        assert current_unit() is outer
        async with AsyncUnitOfWork(db, user_id="inner") as inner2:
            assert get_audit_context().user_id == "inner"
            await inner2.get_repository(Item).create(name="inner2")
        assert get_audit_context().user_id == "outer"
    assert await names(db) == ["inner2", "outer"]
    logs = await get_audit_logs(db, table_name="t_item")
    by_name = {log.new_values["name"]: log.user_id for log in logs if log.new_values}
    assert by_name == {"outer": "outer", "inner2": "inner"}


@pytest.mark.requires("savepoint")
async def test_nested_unit_commits_only_with_the_outer_one(db: AsyncDatabaseManager) -> None:
    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db) as outer:
            async with AsyncUnitOfWork(db) as inner:
                await inner.get_repository(Item).create(name="inner")
            assert await outer.get_repository(Item).count() == 1
            raise Boom
    assert await names(db) == []


@pytest.mark.requires("savepoint")
async def test_nested_unit_explicit_rollback_undoes_only_its_savepoint(
    db: AsyncDatabaseManager,
) -> None:
    async with AsyncUnitOfWork(db) as outer:
        await outer.get_repository(Item).create(name="outer")
        async with AsyncUnitOfWork(db) as inner:
            await inner.get_repository(Item).create(name="undone")
            await inner.rollback()
            await inner.get_repository(Item).create(name="redone")
    assert await names(db) == ["outer", "redone"]


async def test_repository_calls_join_the_active_unit(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db, user_id="u1"):
            created = await items.create(name="joined")
            assert await items.get_by_id(created.id) is created  # same identity map
            raise Boom
    assert await names(db) == []
    async with AsyncUnitOfWork(db, user_id="u2"):
        await items.create(name="kept")
    logs = await get_audit_logs(db, table_name="t_item")
    assert [log.user_id for log in logs] == ["u2"]


async def test_unit_for_another_manager_is_not_joined(
    db: AsyncDatabaseManager, db_url: str, backend: str
) -> None:
    if backend == "sqlite-memory":
        pytest.skip("each in-memory manager is its own database")
    from tests.integration.conftest import manager_for

    async with manager_for(db_url) as other, AsyncUnitOfWork(db) as outer:
        await outer.get_repository(Item).create(name="outer")
        async with AsyncUnitOfWork(other) as unrelated:
            assert not unrelated.is_nested
            # a repository of the first manager still joins the first unit
            await Repository(Item, db).create(name="joined-outer")
        assert await outer.get_repository(Item).count() == 2
    assert await names(db) == ["joined-outer", "outer"]


# -- on_commit -------------------------------------------------------------------------


@pytest.mark.requires("savepoint")
async def test_on_commit_runs_once_after_success(db: AsyncDatabaseManager) -> None:
    calls: list[str] = []

    async def async_cb() -> None:
        calls.append("async")

    async with AsyncUnitOfWork(db) as uow:
        uow.on_commit(lambda: calls.append("sync"))
        uow.on_commit(async_cb)
        async with AsyncUnitOfWork(db) as inner:
            inner.on_commit(lambda: calls.append("nested"))
        async with uow.savepoint():
            uow.on_commit(lambda: calls.append("savepoint"))
        await uow.get_repository(Item).create(name="x")
        assert calls == []
    assert calls == ["sync", "async", "nested", "savepoint"]


@pytest.mark.requires("savepoint")
async def test_on_commit_never_runs_after_rollback(db: AsyncDatabaseManager) -> None:
    calls: list[str] = []
    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db) as uow:
            uow.on_commit(lambda: calls.append("outer"))
            raise Boom
    async with AsyncUnitOfWork(db) as uow:
        uow.on_commit(lambda: calls.append("kept"))
        with pytest.raises(Boom):
            async with uow.savepoint():
                uow.on_commit(lambda: calls.append("savepoint"))
                raise Boom
        with pytest.raises(Boom):
            async with AsyncUnitOfWork(db) as inner:
                inner.on_commit(lambda: calls.append("nested"))
                raise Boom
        async with AsyncUnitOfWork(db) as inner:
            inner.on_commit(lambda: calls.append("nested-undone"))
            await inner.rollback()
    assert calls == ["kept"]
    async with AsyncUnitOfWork(db) as uow:
        uow.on_commit(lambda: calls.append("explicitly-rolled-back"))
        await uow.rollback()
    assert calls == ["kept"]


async def test_on_commit_after_explicit_commit_and_failing_callback(
    db: AsyncDatabaseManager, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def failing() -> None:
        raise RuntimeError("callback failed")

    async with AsyncUnitOfWork(db) as uow:
        uow.on_commit(failing)
        uow.on_commit(lambda: calls.append("first"))
        await uow.commit()
        assert calls == ["first"]
        uow.on_commit(lambda: calls.append("second"))
    assert calls == ["first", "second"]
    assert "on_commit callback failed" in caplog.text


async def test_on_commit_callback_does_not_write_into_the_closed_unit(
    db: AsyncDatabaseManager,
) -> None:
    """A callback that writes gets its own transaction, not the finished unit's."""
    items = Repository(Item, db)

    async def follow_up() -> None:
        assert current_unit() is None or current_unit().state is not UnitState.ACTIVE
        await items.create(name="from-callback")

    async with AsyncUnitOfWork(db) as uow:
        await items.create(name="main")
        uow.on_commit(follow_up)
    assert await names(db) == ["from-callback", "main"]


async def test_on_commit_callback_after_explicit_commit_runs_outside_the_unit(
    db: AsyncDatabaseManager,
) -> None:
    items = Repository(Item, db)

    async def follow_up() -> None:
        await items.create(name="from-callback")

    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db) as uow:
            await items.create(name="main")
            uow.on_commit(follow_up)
            await uow.commit()
            raise Boom  # rolls back the unit's next transaction only
    assert await names(db) == ["from-callback", "main"]


# -- metrics ---------------------------------------------------------------------------


@pytest.mark.requires("savepoint")
async def test_transaction_figures_reach_the_metrics(db: AsyncDatabaseManager) -> None:
    db.metrics.reset()
    before = transactions(db)
    async with AsyncUnitOfWork(db) as uow:
        await uow.get_repository(Item).create(name="a")
        async with AsyncUnitOfWork(db):  # a savepoint is not a transaction
            pass
    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db):
            raise Boom
    async with AsyncUnitOfWork(db) as uow:
        await uow.commit()  # ends one transaction, begins the next
        await uow.rollback()  # ends that one, begins a third
    after = transactions(db)
    assert after["begun"] - before["begun"] == 5
    assert after["committed"] - before["committed"] == 3
    assert after["rolled_back"] - before["rolled_back"] == 2
    assert after["active"] == 0
    assert after["max_seconds"] >= 0


async def test_failed_commit_counts_as_rollback(db: AsyncDatabaseManager) -> None:
    await Repository(Item, db).create(name="x", sku="dup")
    db.metrics.reset()
    with pytest.raises(ConflictError):
        async with AsyncUnitOfWork(db) as uow:
            uow.session.add(Item(name="y", sku="dup"))  # fails in the commit's flush
    figures = transactions(db)
    assert (figures["begun"], figures["committed"], figures["rolled_back"]) == (1, 0, 1)
    assert figures["active"] == 0


async def test_observer_hook_receives_outcomes(db: AsyncDatabaseManager) -> None:
    seen: list[tuple[str, float]] = []

    class Observer:
        def on_transaction_begin(self) -> None:
            seen.append(("begin", 0.0))

        def on_transaction_end(self, outcome: str, duration: float) -> None:
            seen.append((outcome, duration))

    db.add_transaction_observer(Observer())
    async with AsyncUnitOfWork(db):
        pass
    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db):
            raise Boom
    assert [name for name, _ in seen] == ["begin", "commit", "begin", "rollback"]
    assert all(duration >= 0 for _, duration in seen)


async def test_failing_observer_does_not_break_the_unit(
    db: AsyncDatabaseManager, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def on_transaction_begin(self) -> None:
            raise RuntimeError("observer bug")

        def on_transaction_end(self, outcome: str, duration: float) -> None:
            raise RuntimeError("observer bug")

    db.add_transaction_observer(Broken())
    async with AsyncUnitOfWork(db) as uow:
        await uow.get_repository(Item).create(name="kept")
    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db) as uow:
            await uow.get_repository(Item).create(name="undone")
            raise Boom
    assert db.pool_status()["checked_out"] == 0
    assert await names(db) == ["kept"]
    assert "transaction observer failed" in caplog.text


# -- read-only and isolation -----------------------------------------------------------


async def test_read_only_unit_refuses_writes(db: AsyncDatabaseManager) -> None:
    await Repository(Item, db).create(name="x")
    async with AsyncUnitOfWork(db, read_only=True) as uow:
        assert await uow.get_repository(Item).count() == 1
        with pytest.raises(TransactionError, match="read-only"):
            await uow.get_repository(Item).create(name="nope")
    with pytest.raises(TransactionError, match="read-only"):
        async with AsyncUnitOfWork(db, read_only=True), AsyncUnitOfWork(db):
            pass
    assert await names(db) == ["x"]


async def test_isolation_level_applies_to_every_transaction_of_the_unit(
    db: AsyncDatabaseManager, is_postgres: bool
) -> None:
    async with AsyncUnitOfWork(db, isolation_level="serializable") as uow:
        assert uow.isolation_level == "SERIALIZABLE"
        if is_postgres:
            level = await uow.session.scalar(select(func.current_setting("transaction_isolation")))
            assert level == "serializable"
            await uow.commit()
            level = await uow.session.scalar(select(func.current_setting("transaction_isolation")))
            assert level == "serializable"
        await uow.get_repository(Item).create(name="x")
    if is_postgres:
        async with AsyncUnitOfWork(db) as uow:
            level = await uow.session.scalar(select(func.current_setting("transaction_isolation")))
            assert level == "read committed"  # the pooled connection was reset
    assert await names(db) == ["x"]


@pytest.mark.requires("savepoint")
async def test_nested_unit_cannot_change_the_isolation_level(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db) as outer:
        with pytest.raises(TransactionError, match="isolation"):
            async with AsyncUnitOfWork(db, isolation_level="SERIALIZABLE"):
                pass
        await outer.get_repository(Item).create(name="still-usable")
    async with (
        AsyncUnitOfWork(db, isolation_level="SERIALIZABLE"),
        AsyncUnitOfWork(db, isolation_level="SERIALIZABLE") as same,
    ):
        assert same.is_nested
    assert await names(db) == ["still-usable"]


@pytest.mark.requires("savepoint")
async def test_units_on_a_connection_bound_manager(
    db: AsyncDatabaseManager, is_postgres: bool
) -> None:
    """In SAVEPOINT mode (the testing plugin) units commit and roll back savepoints."""
    async with db.engine.connect() as conn:
        await conn.begin()
        with db.bind_sessions_to(conn):
            async with AsyncUnitOfWork(db) as uow:
                await uow.get_repository(Item).create(name="released")
            with pytest.raises(Boom):
                async with AsyncUnitOfWork(db) as uow:
                    await uow.get_repository(Item).create(name="undone")
                    raise Boom
            if is_postgres:
                with pytest.raises(TransactionError, match="isolation_level"):
                    async with AsyncUnitOfWork(db, isolation_level="SERIALIZABLE"):
                        pass
            rows = (await conn.execute(select(Item.name))).scalars().all()
            assert rows == ["released"]
        await conn.rollback()
    assert await names(db) == []


# -- audit context ---------------------------------------------------------------------


async def test_unit_sets_and_restores_the_audit_context(db: AsyncDatabaseManager) -> None:
    async with audit_context(user_id="ambient", correlation_id="req-1"):
        async with AsyncUnitOfWork(db, user_id=7, session_id="s") as uow:
            context = get_audit_context()
            assert (context.user_id, context.session_id, context.correlation_id) == (
                "7",
                "s",
                "req-1",
            )
            await uow.get_repository(Item).create(name="x")
        assert get_audit_context().user_id == "ambient"
    assert get_audit_context().user_id is None
    assert current_unit() is None
    (log,) = await get_audit_logs(db, table_name="t_item")
    assert (log.user_id, log.session_id, log.correlation_id) == ("7", "s", "req-1")


# -- misuse ----------------------------------------------------------------------------


async def test_use_after_close_is_a_transaction_error(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db) as uow:
        items = uow.get_repository(Item)
    for use in (
        lambda: uow.session,
        lambda: uow.get_repository(Item),
        lambda: uow.on_commit(lambda: None),
    ):
        with pytest.raises(TransactionError, match="closed"):
            use()
    for coro in (uow.commit, uow.rollback, uow.flush):
        with pytest.raises(TransactionError, match="closed"):
            await coro()
    with pytest.raises(TransactionError, match="closed"):
        await items.create(name="late")
    with pytest.raises(TransactionError, match="closed"):
        async with uow.savepoint():
            pass


async def test_use_before_enter_is_a_transaction_error(db: AsyncDatabaseManager) -> None:
    uow = AsyncUnitOfWork(db)
    with pytest.raises(TransactionError, match="not begun"):
        uow.session  # noqa: B018


@pytest.mark.requires("savepoint")
async def test_commit_or_rollback_inside_a_savepoint_is_refused(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db) as uow:
        await uow.get_repository(Item).create(name="kept")
        async with uow.savepoint():
            with pytest.raises(TransactionError, match="savepoint"):
                await uow.commit()
            with pytest.raises(TransactionError, match="savepoint"):
                await uow.rollback()
            await uow.get_repository(Item).create(name="inner")
    assert await names(db) == ["inner", "kept"]


@pytest.mark.requires("savepoint")
async def test_commit_inside_a_nested_unit_is_refused(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db) as outer, AsyncUnitOfWork(db) as inner:
        await inner.get_repository(Item).create(name="inner")
        with pytest.raises(TransactionError, match="outer unit commits"):
            await inner.commit()
        # the outer unit cannot end its transaction under an open nested one either
        with pytest.raises(TransactionError, match="nested"):
            await outer.commit()
        with pytest.raises(TransactionError, match="nested"):
            await outer.rollback()
        async with inner.savepoint():
            with pytest.raises(TransactionError, match="savepoint"):
                await inner.rollback()
    assert await names(db) == ["inner"]


async def test_child_task_cannot_use_the_parent_unit(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    async with AsyncUnitOfWork(db) as uow:
        await items.create(name="parent")

        async def use_session() -> object:
            return uow.session

        async def use_repository() -> object:
            return await items.get_by_id(1)

        async def use_bound_repository() -> object:
            return await uow.get_repository(Item).count()

        async def commit() -> None:
            await uow.commit()

        for fn in (use_session, use_repository, use_bound_repository, commit):
            with pytest.raises(TransactionError, match=r"(?i)open a unit per task"):
                await asyncio.create_task(fn())
        results = await asyncio.gather(use_session(), use_repository(), return_exceptions=True)
        assert all(isinstance(r, TransactionError) for r in results)
        assert all("unit per task" in str(r) for r in results)
        # the parent's own work is unaffected
        assert await items.count() == 1
    assert await names(db) == ["parent"]


async def test_unit_opened_in_a_child_task_is_an_independent_root(
    db: AsyncDatabaseManager, backend: str
) -> None:
    parent_units: list[AsyncUnitOfWork] = []

    async def child(name: str) -> None:
        async with AsyncUnitOfWork(db, user_id=name) as mine:
            assert not mine.is_nested
            assert mine.owner_task is not parent_units[0].owner_task
            assert current_unit() is mine
            await Repository(Item, db).create(name=name)
        assert current_unit() is parent_units[0]  # the inherited snapshot is restored

    # SQLite allows one writer: there the parent writes after its children committed
    # (a unit takes its connection, and the write lock, at its first statement).
    parent_writes_first = backend == "postgres"
    with pytest.raises(Boom):
        async with AsyncUnitOfWork(db, user_id="parent") as parent:
            parent_units.append(parent)
            if parent_writes_first:
                await parent.get_repository(Item).create(name="parent")
            await asyncio.gather(child("child1"), child("child2"))
            await parent.get_repository(Item).create(name="parent2")
            raise Boom  # the parent rolls back; the children committed on their own
    assert await names(db) == ["child1", "child2"]
    logs = await get_audit_logs(db, table_name="t_item")
    assert sorted(log.user_id or "" for log in logs) == ["child1", "child2"]


async def test_unit_passed_to_another_task_is_refused(db: AsyncDatabaseManager) -> None:
    ready = asyncio.Event()
    holder: list[AsyncUnitOfWork] = []

    async def owner() -> None:
        async with AsyncUnitOfWork(db) as uow:
            holder.append(uow)
            ready.set()
            await asyncio.sleep(0.05)

    task = asyncio.create_task(owner())
    await ready.wait()
    with pytest.raises(TransactionError, match="unit per task"):
        holder[0].session  # noqa: B018
    await task


# -- cancellation ----------------------------------------------------------------------


async def test_cancel_after_flush_rolls_back_and_returns_the_connection(
    db: AsyncDatabaseManager,
) -> None:
    """Cancelled while waiting outside the database: a plain rollback, no invalidation.

    The row written before proves the connection was not thrown away (on sqlite
    :memory: the connection is the database).
    """
    await Repository(Item, db).create(name="survivor")
    flushed = asyncio.Event()
    never = asyncio.Event()
    invalidated_before = db.metrics.connections_invalidated

    async def work() -> None:
        async with AsyncUnitOfWork(db) as uow:
            await uow.get_repository(Item).create(name="cancelled")
            uow.on_commit(lambda: pytest.fail("on_commit ran after a cancel"))
            flushed.set()
            await never.wait()

    task = asyncio.create_task(work())
    await flushed.wait()
    assert db.pool_status()["checked_out"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert db.pool_status()["checked_out"] == 0
    assert db.metrics.connections_invalidated == invalidated_before
    assert await names(db) == ["survivor"]
    async with AsyncUnitOfWork(db) as uow:
        await uow.get_repository(Item).create(name="next")
    assert await names(db) == ["next", "survivor"]


async def test_second_cancel_during_rollback_still_rolls_back(
    db: AsyncDatabaseManager, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancel that lands while the rollback runs must not abandon or invalidate it."""
    from sqlalchemy import event

    await Repository(Item, db).create(name="survivor")
    flushed = asyncio.Event()
    rolling_back = asyncio.Event()
    never = asyncio.Event()

    def on_rollback(conn: Any) -> None:
        rolling_back.set()

    async def work() -> None:
        async with AsyncUnitOfWork(db) as uow:
            await uow.get_repository(Item).create(name="cancelled")
            flushed.set()
            await never.wait()

    event.listen(db.engine.sync_engine, "rollback", on_rollback)
    try:
        task = asyncio.create_task(work())
        await flushed.wait()
        task.cancel()
        await rolling_back.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        event.remove(db.engine.sync_engine, "rollback", on_rollback)
    assert db.pool_status()["checked_out"] == 0
    assert "asyncdb" not in {record.name for record in caplog.records}  # nothing failed
    assert await names(db) == ["survivor"]


async def test_cancel_during_commit_lets_the_commit_finish(db: AsyncDatabaseManager) -> None:
    """COMMIT is not interrupted half-way: it completes, then the cancel propagates."""
    from sqlalchemy import event

    committing = asyncio.Event()
    calls: list[str] = []

    def on_commit(conn: Any) -> None:
        committing.set()

    async def work() -> None:
        async with AsyncUnitOfWork(db) as uow:
            await uow.get_repository(Item).create(name="committed")
            uow.on_commit(lambda: calls.append("after-commit"))

    event.listen(db.engine.sync_engine, "commit", on_commit)
    try:
        task = asyncio.create_task(work())
        await committing.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        event.remove(db.engine.sync_engine, "commit", on_commit)
    assert db.pool_status()["checked_out"] == 0
    assert await names(db) == ["committed"]
    assert calls == ["after-commit"]  # the commit succeeded, so its callbacks ran


@pytest.mark.requires("savepoint")
async def test_cancel_inside_a_savepoint_rolls_back_the_unit(db: AsyncDatabaseManager) -> None:
    inside = asyncio.Event()

    async def work() -> None:
        async with AsyncUnitOfWork(db) as uow:
            await uow.get_repository(Item).create(name="outer")
            async with uow.savepoint(), AsyncUnitOfWork(db) as nested:
                await nested.get_repository(Item).create(name="inner")
                inside.set()
                await asyncio.Event().wait()

    task = asyncio.create_task(work())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert db.pool_status()["checked_out"] == 0
    assert await names(db) == []
    assert current_unit() is None


@pytest.mark.requires("blocking_locks")
async def test_cancel_mid_flush_on_a_locked_database(
    db: AsyncDatabaseManager, db_url: str, backend: str
) -> None:
    """The flush waits on a lock another connection holds; the task is cancelled there.

    SQLite: the other connection holds the write lock, so the flush's BEGIN IMMEDIATE
    waits on the busy timeout. PostgreSQL: the other connection inserted the same
    unique key and has not committed, so the flush's INSERT waits for it.
    """
    if backend == "sqlite-memory":
        pytest.skip("one connection: no other can hold a lock; see the cancel-after-flush test")
    from sqlalchemy import event, text

    from tests.integration.conftest import manager_for

    flushing = asyncio.Event()

    def before_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):
            flushing.set()

    async def work() -> None:
        async with AsyncUnitOfWork(db) as uow:
            uow.session.add(Item(name="cancelled", sku="contested"))
            await uow.flush()

    async def insert_waits_on_lock() -> bool:
        async with other.autocommit_session() as s:
            if backend == "mariadb":
                innodb = (  # this database's lock waits only: other workers run beside
                    "SELECT count(*) FROM information_schema.innodb_trx t "
                    "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                    "WHERE t.trx_state = 'LOCK WAIT' AND p.db = DATABASE()"
                )
                return bool(await s.scalar(text(innodb)))
            query = text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO t_item%'"
            )
            return bool(await s.scalar(query))

    async with manager_for(db_url) as other:
        locker = other.session()
        event.listen(db.engine.sync_engine, "before_cursor_execute", before_execute)
        try:
            locker.add(Item(name="locker", sku="contested"))
            await locker.flush()  # holds the lock until the rollback below
            task = asyncio.create_task(work())
            if backend in ("postgres", "mariadb"):
                await wait_until(insert_waits_on_lock, "the flush's INSERT waits on the lock")
            else:
                await flushing.wait()
                await asyncio.sleep(0.1)  # the BEGIN IMMEDIATE sits in SQLite's busy wait
            assert not task.done()
            task.cancel()
            await asyncio.sleep(0.05)
        finally:
            await locker.rollback()
            await locker.close()
            event.remove(db.engine.sync_engine, "before_cursor_execute", before_execute)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
    await wait_until(lambda: db.pool_status()["checked_out"] == 0, "the connection is returned")
    assert await names(db) == []
    async with AsyncUnitOfWork(db) as uow:  # the pool hands out a working connection
        await uow.get_repository(Item).create(name="next", sku="contested")
    assert await names(db) == ["next"]


async def test_timeout_around_a_unit_rolls_back(db: AsyncDatabaseManager) -> None:
    async def slow() -> None:
        async with AsyncUnitOfWork(db) as uow:
            await uow.get_repository(Item).create(name="timed-out")
            await asyncio.sleep(10)

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(slow(), 0.2)
    assert db.pool_status()["checked_out"] == 0
    assert await names(db) == []


# -- many tasks ------------------------------------------------------------------------


@pytest.mark.slow
async def test_concurrent_units_never_share_context(db: AsyncDatabaseManager) -> None:
    """1,000 tasks, each in its own unit with its own user_id, all open at once.

    Each sees only its own unit and audit context, before and after writing, and the
    audit rows name each row's creator. (On sqlite :memory: the single connection
    makes the writes queue; the units are still all open together.)
    """
    tasks = 1000
    db_for_test = db
    errors: list[str] = []
    barrier = asyncio.Event()
    started = 0

    async def one(n: int) -> tuple[int, str]:
        nonlocal started
        user = f"user-{n}"
        async with AsyncUnitOfWork(db_for_test, user_id=user, correlation_id=f"c-{n}") as uow:
            started += 1
            if started == tasks:
                barrier.set()
            # let the other tasks open their units before any of them writes
            await asyncio.wait_for(barrier.wait(), 30)
            if current_unit() is not uow or get_audit_context().user_id != user:
                errors.append(f"task {n} saw another unit or context before writing")
            item = await uow.get_repository(Item).create(name=user)
            await asyncio.sleep(0)
            if current_unit() is not uow or get_audit_context().user_id != user:
                errors.append(f"task {n} saw another unit or context after writing")
        return item.id, user

    created = await asyncio.gather(*(one(n) for n in range(tasks)))
    assert errors == []
    logs = await get_audit_logs(db, table_name="t_item", limit=2000)
    assert len(logs) == tasks
    creator = {log.entity_id: (log.user_id, log.correlation_id) for log in logs}
    for entity, user in created:
        assert creator[str(entity)] == (user, f"c-{user.removeprefix('user-')}")
    assert await item_count(db) == tasks
