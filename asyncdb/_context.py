"""Task-local state: the audit context and the unit of work active in the current task.

This module sits below the repository, the unit of work, the audit trail and the
instrumentation, so those layers import downward only. Both values live in
ContextVars: every asyncio task sees its own copy, and a task created inside a block
starts with a snapshot of its parent's (which is why a unit records its owner task).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import types
from typing import Any, Protocol

__all__ = [
    "AuditContext",
    "UnitLike",
    "audit_context",
    "current_unit",
    "get_audit_context",
    "last_write",
    "note_write",
]


@dataclasses.dataclass(frozen=True)
class AuditContext:
    """Who is making a change: carried into every audit row and the slow-query log."""

    user_id: str | None = None
    session_id: str | None = None
    correlation_id: str | None = None
    extra: types.MappingProxyType[str, Any] = dataclasses.field(
        default_factory=lambda: types.MappingProxyType({})
    )

    def merged(self, other: AuditContext) -> AuditContext:
        """``other``'s non-empty fields over this one's; ``extra`` merged key by key."""
        return AuditContext(
            user_id=other.user_id if other.user_id is not None else self.user_id,
            session_id=other.session_id if other.session_id is not None else self.session_id,
            correlation_id=(
                other.correlation_id if other.correlation_id is not None else self.correlation_id
            ),
            extra=types.MappingProxyType({**self.extra, **other.extra}),
        )

    def as_dict(self) -> dict[str, Any]:
        """A plain dict (``extra`` copied)."""
        return {
            "user_id": self.user_id,
            "session_id": self.session_id,
            "correlation_id": self.correlation_id,
            "extra": dict(self.extra),
        }

    @classmethod
    def of(
        cls,
        user_id: object = None,
        session_id: object = None,
        correlation_id: object = None,
        extra: dict[str, Any] | None = None,
    ) -> AuditContext:
        """Build a context, turning ids into strings (a user id may be an int or UUID)."""
        return cls(
            user_id=None if user_id is None else str(user_id),
            session_id=None if session_id is None else str(session_id),
            correlation_id=None if correlation_id is None else str(correlation_id),
            extra=types.MappingProxyType(dict(extra or {})),
        )


EMPTY_CONTEXT = AuditContext()
_audit: contextvars.ContextVar[AuditContext] = contextvars.ContextVar(
    "asyncdb_audit_context", default=EMPTY_CONTEXT
)


def get_audit_context() -> AuditContext:
    """The audit context active in the current task (empty when none is set)."""
    return _audit.get()


def set_audit_context(context: AuditContext) -> contextvars.Token[AuditContext]:
    """Replace the active audit context; undo with :func:`reset_audit_context`."""
    return _audit.set(context)


def _restore(var: contextvars.ContextVar[Any], token: contextvars.Token[Any], default: Any) -> None:
    try:
        var.reset(token)
    except ValueError:
        # The block was left in another Context than the one it was entered in (an async
        # generator or fixture resumed elsewhere, a callback run via copy_context). That
        # context may hold a copy of the value the block set: put back what preceded it.
        old = token.old_value
        var.set(default if old is contextvars.Token.MISSING else old)


def reset_audit_context(token: contextvars.Token[AuditContext]) -> None:
    """Restore the audit context that was active before :func:`set_audit_context`."""
    _restore(_audit, token, EMPTY_CONTEXT)


class audit_context:
    """Set who is acting for the duration of a block; nests by merging.

    Works with ``with`` and ``async with``::

        async with audit_context(user_id="42", correlation_id=request_id):
            await repo.update(1, name="new")   # the audit row carries user 42

    On exit the previous context is restored, also when the block raises.
    """

    def __init__(
        self,
        user_id: object = None,
        session_id: object = None,
        correlation_id: object = None,
        **extra: Any,
    ) -> None:
        self._context = AuditContext.of(user_id, session_id, correlation_id, extra)
        self._tokens: list[contextvars.Token[AuditContext]] = []

    def __enter__(self) -> AuditContext:
        merged = _audit.get().merged(self._context)
        self._tokens.append(_audit.set(merged))
        return merged

    def __exit__(self, *exc_info: object) -> None:
        reset_audit_context(self._tokens.pop())

    async def __aenter__(self) -> AuditContext:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)


class UnitLike(Protocol):
    """What lower layers need to know about the active unit of work."""

    @property
    def owner_task(self) -> asyncio.Task[Any] | None: ...


_unit: contextvars.ContextVar[Any] = contextvars.ContextVar("asyncdb_unit", default=None)


def current_unit() -> Any:
    """The unit of work active in this context, or None."""
    return _unit.get()


def set_current_unit(unit: Any) -> contextvars.Token[Any]:
    """Make ``unit`` the active one; reset with :func:`reset_current_unit`."""
    return _unit.set(unit)


def reset_current_unit(token: contextvars.Token[Any]) -> None:
    """Restore the unit that was active before :func:`set_current_unit`."""
    _restore(_unit, token, None)


def owning_task() -> asyncio.Task[Any] | None:
    """The running task, or None outside one."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


class _WriteMarks:
    """When this context last committed a write, per router (read-your-writes).

    Mutable and shared: tasks created after the first write of a context see (and
    extend) the same marks, so a request's sub-tasks read what the request wrote.
    """

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at: dict[int, float] = {}


_writes: contextvars.ContextVar[_WriteMarks | None] = contextvars.ContextVar(
    "asyncdb_last_write", default=None
)


def note_write(router: object, now: float) -> None:
    """Record that this context committed a write through ``router`` at ``now``."""
    marks = _writes.get()
    if marks is None:
        marks = _WriteMarks()
        _writes.set(marks)
    marks.at[id(router)] = now


def last_write(router: object) -> float | None:
    """When this context last committed a write through ``router``, or None."""
    marks = _writes.get()
    return None if marks is None else marks.at.get(id(router))
