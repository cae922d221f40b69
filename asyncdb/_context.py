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
import functools
import json
import types
import uuid
from typing import Any, Protocol

from ._errors import ValidationError

__all__ = [
    "MAX_AUDIT_EXTRA_BYTES",
    "MAX_AUDIT_ID_LENGTH",
    "ActingUnit",
    "AuditContext",
    "acts_for",
    "audit_context",
    "current_unit",
    "get_audit_context",
    "last_write",
    "note_write",
    "prepare_write_marks",
]


#: Longest user, session or correlation id: the width of the audit log's columns.
MAX_AUDIT_ID_LENGTH = 255
#: Largest JSON form of an audit context's extras.
MAX_AUDIT_EXTRA_BYTES = 64 * 1024


def _checked_id(name: str, value: object) -> str | None:
    """``value`` as the text stored in the audit log; ValidationError if it cannot be."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, uuid.UUID)):
        msg = f"{name} must be a string, an int or a UUID (got a {type(value).__name__})."
        raise ValidationError(msg)
    text = str(value)
    if len(text) > MAX_AUDIT_ID_LENGTH:
        msg = (
            f"{name} is {len(text)} characters long; the audit log stores at most "
            f"{MAX_AUDIT_ID_LENGTH}. Pass a shorter id (a hash or a database key)."
        )
        raise ValidationError(msg)
    if "\x00" in text or not _encodable(text):
        msg = f"{name} holds a NUL character or a lone surrogate, which no database stores."
        raise ValidationError(msg)
    return text


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _checked_extra(extra: dict[str, Any] | None) -> dict[str, Any]:
    """``extra`` if it is JSON (finite numbers, string keys) and not too large."""
    if not extra:
        return {}  # the usual case: nothing to check
    values = dict(extra)
    if not all(isinstance(key, str) for key in values):
        msg = "Audit context extras must have string keys."
        raise ValidationError(msg)
    try:
        text = json.dumps(values, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        msg = (
            "Audit context extras must be JSON values (str, int, float, bool, None, lists "
            "and dicts with string keys); convert dates and ids to strings first."
        )
        raise ValidationError(msg) from exc
    if "\\u0000" in text or not _encodable(text):
        msg = "Audit context extras hold a NUL character or a lone surrogate."
        raise ValidationError(msg)
    if len(text.encode()) > MAX_AUDIT_EXTRA_BYTES:
        msg = (
            f"Audit context extras take {len(text.encode())} bytes as JSON; at most "
            f"{MAX_AUDIT_EXTRA_BYTES} are stored with every audit row. Keep them small."
        )
        raise ValidationError(msg)
    return values


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
        """Build a context, turning ids into strings (a user id may be an int or UUID).

        Everything is checked here, when the context is set, so that a bad id or
        extra is one clear :class:`ValidationError` rather than a failure of every
        later audited write: ids at most :data:`MAX_AUDIT_ID_LENGTH` characters,
        extras JSON-serializable and at most :data:`MAX_AUDIT_EXTRA_BYTES`.
        """
        return cls(
            user_id=_checked_id("user_id", user_id),
            session_id=_checked_id("session_id", session_id),
            correlation_id=_checked_id("correlation_id", correlation_id),
            extra=types.MappingProxyType(_checked_extra(extra)),
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


class ActingUnit(Protocol):
    """What the audit trail needs from the unit of work a session belongs to."""

    def effective_audit(self) -> AuditContext: ...


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


def acts_for(owner: asyncio.Task[Any] | None) -> bool:
    """True when the running task is ``owner``, or runs on its behalf in ``wait_for``.

    On Python 3.10 and 3.11 ``asyncio.wait_for(coro, t)`` runs ``coro`` in a new task
    while the caller waits for it, suspended; that task acts for the caller, so it may
    use the caller's unit of work (3.12+ runs ``coro`` in the caller's own task). The
    link is exact: the new task's done-callback releases the very future the owner is
    waiting on. A task started with ``create_task`` or ``gather`` is never linked.
    """
    task = owning_task()
    for _ in range(_MAX_WAIT_FOR_DEPTH):
        if task is owner:
            return True
        if task is None:
            return False
        waiter = _wait_for_waiter(task)
        if waiter is None:
            return False
        task = _task_waiting_on(waiter, owner)
    return False


_MAX_WAIT_FOR_DEPTH = 8
_release_waiter = getattr(asyncio.tasks, "_release_waiter", None)


def _wait_for_waiter(task: asyncio.Task[Any]) -> Any:
    """The future a ``wait_for`` caller waits on, if ``task`` was started by one."""
    if _release_waiter is None:
        return None
    for entry in getattr(task, "_callbacks", None) or ():
        callback = entry[0] if isinstance(entry, tuple) else entry
        if (
            isinstance(callback, functools.partial)
            and callback.func is _release_waiter
            and callback.args
        ):
            return callback.args[0]
    return None


def _task_waiting_on(waiter: Any, owner: asyncio.Task[Any] | None) -> asyncio.Task[Any] | None:
    if owner is not None and getattr(owner, "_fut_waiter", None) is waiter:
        return owner
    for task in asyncio.all_tasks():
        if getattr(task, "_fut_waiter", None) is waiter:
            return task
    return None


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


def prepare_write_marks() -> None:
    """Make this context's write marks exist before a write is committed.

    A unit of work commits in a shielded helper task, which runs in a copy of this
    context: a mark that helper created would be lost, one it adds to these is seen.
    """
    if _writes.get() is None:
        _writes.set(_WriteMarks())


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
