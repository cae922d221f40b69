"""Task-local state: the audit context and the current unit of work (no database)."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from asyncdb import AuditContext, audit_context, get_audit_context
from asyncdb._context import (
    current_unit,
    owning_task,
    reset_audit_context,
    reset_current_unit,
    set_audit_context,
    set_current_unit,
)


def test_of_turns_ids_into_strings() -> None:
    import uuid

    token = uuid.UUID(int=5)
    ctx = AuditContext.of(42, token, None, {"ip": "10.0.0.1"})
    assert ctx.user_id == "42"
    assert ctx.session_id == str(token)
    assert ctx.correlation_id is None
    assert dict(ctx.extra) == {"ip": "10.0.0.1"}
    with pytest.raises(TypeError):
        ctx.extra["x"] = 1  # type: ignore[index]


def test_merged_prefers_the_other_non_empty_fields() -> None:
    base = AuditContext.of("u1", "s1", "c1", {"a": 1, "b": 1})
    over = AuditContext.of(None, "s2", None, {"b": 2})
    merged = base.merged(over)
    assert merged.as_dict() == {
        "user_id": "u1",
        "session_id": "s2",
        "correlation_id": "c1",
        "extra": {"a": 1, "b": 2},
    }


def test_default_context_is_empty() -> None:
    assert get_audit_context() == AuditContext()
    assert current_unit() is None


def test_audit_context_nests_and_restores_with_and_without_errors() -> None:
    with audit_context(user_id="outer", correlation_id="c") as outer:
        assert outer.user_id == "outer"
        with pytest.raises(RuntimeError), audit_context(user_id="inner"):
            assert get_audit_context().user_id == "inner"
            assert get_audit_context().correlation_id == "c"
            raise RuntimeError
        assert get_audit_context().user_id == "outer"
    assert get_audit_context() == AuditContext()


def test_one_audit_context_object_can_be_entered_twice() -> None:
    ctx = audit_context(user_id="u")
    with ctx, ctx:
        assert get_audit_context().user_id == "u"
    assert get_audit_context().user_id is None


async def test_async_audit_context() -> None:
    async with audit_context(user_id="a", tenant="t") as ctx:
        assert get_audit_context() is ctx
        assert dict(ctx.extra) == {"tenant": "t"}
    assert get_audit_context().user_id is None


async def test_tasks_do_not_see_each_others_context() -> None:
    everyone_set = asyncio.Event()
    waiting = 0

    async def one(n: int) -> bool:
        nonlocal waiting
        async with audit_context(user_id=n):
            waiting += 1
            if waiting == 100:
                everyone_set.set()
            await everyone_set.wait()  # every task has set its own context by now
            return get_audit_context().user_id == str(n)

    assert all(await asyncio.gather(*(one(n) for n in range(100))))


async def test_child_task_inherits_a_snapshot_and_cannot_change_the_parent() -> None:
    async def child() -> str | None:
        seen = get_audit_context().user_id
        set_audit_context(AuditContext.of("child"))
        set_current_unit("child-unit")
        return seen

    with audit_context(user_id="parent"):
        token = set_current_unit("parent-unit")
        assert await asyncio.create_task(child()) == "parent"
        assert get_audit_context().user_id == "parent"
        assert current_unit() == "parent-unit"
        reset_current_unit(token)
    assert current_unit() is None


def test_resets_with_a_token_from_another_context_do_not_raise() -> None:
    ctx = contextvars.copy_context()
    unit_token = ctx.run(set_current_unit, "elsewhere")
    audit_token = ctx.run(set_audit_context, AuditContext.of("elsewhere"))
    set_current_unit("here")
    reset_current_unit(unit_token)  # cleared rather than leaving a stale unit visible
    assert current_unit() is None
    reset_audit_context(audit_token)
    assert get_audit_context() == AuditContext()


def test_block_left_in_another_context_restores_the_previous_value() -> None:
    """An async generator or fixture may resume its exit in a copy of the context."""

    def scenario() -> tuple[str | None, object]:
        block = audit_context(user_id="inner")
        with audit_context(user_id="outer"):
            set_current_unit("outer-unit")
            block.__enter__()
            inner_unit = set_current_unit("inner-unit")
            elsewhere = contextvars.copy_context()  # holds the block's values
            elsewhere.run(reset_current_unit, inner_unit)
            elsewhere.run(block.__exit__, None, None, None)
            return elsewhere.run(get_audit_context).user_id, elsewhere.run(current_unit)

    assert contextvars.copy_context().run(scenario) == ("outer", "outer-unit")
    assert get_audit_context().user_id is None


def test_owning_task_outside_a_loop_is_none() -> None:
    assert owning_task() is None


async def test_owning_task_is_the_running_task() -> None:
    async def task_of() -> asyncio.Task[object] | None:
        return owning_task()

    assert owning_task() is asyncio.current_task()
    child = asyncio.create_task(task_of())
    assert await child is child
