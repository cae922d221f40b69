"""The session classes asyncdb hands out: SQLAlchemy's, with errors translated.

Every I/O coroutine method of ``AsyncSession`` (and of the transaction objects that
``begin()``/``begin_nested()`` return) raises asyncdb errors. The wrappers are
installed at import time, outside what a type checker reads, so a user's mypy still
sees SQLAlchemy's own signatures and overloads: ``await session.execute(select(User))``
is a ``Result[tuple[User]]``, not ``Any``.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction
from sqlalchemy.orm import Session

from ._errors import AsyncDBError, DatabaseUnavailableError, TransactionError
from ._stream import toolkit_result
from ._translate import translated

__all__ = [
    "TRANSLATED_METHODS",
    "SessionState",
    "ToolkitAsyncSession",
    "ToolkitSession",
    "attempt_in_savepoint",
    "session_state",
]

R = TypeVar("R")

#: The I/O coroutine methods of AsyncSession that raise asyncdb errors here (those the
#: installed SQLAlchemy has: 2.0 lacks ``delete_all`` and ``merge_all``).
TRANSLATED_METHODS = (
    "aclose",
    "close",
    "commit",
    "connection",
    "delete",
    "delete_all",
    "execute",
    "flush",
    "get",
    "get_one",
    "invalidate",
    "merge",
    "merge_all",
    "refresh",
    "reset",
    "rollback",
    "run_sync",
    "scalar",
    "scalars",
    "stream",
    "stream_scalars",
)
#: The same for the transaction objects of begin() and begin_nested().
TRANSLATED_TRANSACTION_METHODS = ("__aenter__", "__aexit__", "commit", "rollback", "start")


#: The one key asyncdb uses in ``session.info``.
STATE_KEY = "asyncdb"


@dataclasses.dataclass(eq=False, slots=True)
class SessionState:
    """Everything asyncdb keeps about one session, typed, under one ``session.info`` key.

    The manager's session factories carry a template (``manager``, ``read_only``); each
    new :class:`ToolkitSession` gets its own copy.
    """

    #: The AsyncDatabaseManager that made the session (None: not one of a manager's).
    manager: Any = None
    #: The session refuses to flush ORM changes.
    read_only: bool = False
    #: The innermost active unit of work using the session (its audit context counts).
    unit: Any = None
    #: What the current transaction changed: model -> primary keys (None: unknown rows).
    changes: dict[type[Any], set[tuple[Any, ...]] | None] | None = None
    #: > 0 while a repository operation records its own changes.
    recorded_by_caller: int = 0
    #: The outermost COMMIT is under way (its outcome is unknown if it raises).
    committing: bool = False
    #: Per-instance audit defaults of the repositories that added them.
    audit_objects: weakref.WeakKeyDictionary[Any, Any] | None = None
    #: (transaction, fresh): whether reads of that transaction see the latest commits.
    fresh: tuple[Any, bool] | None = None
    #: The read replica the session runs on (its node name); None: the primary.
    node: str | None = None


def session_state(session: Session) -> SessionState:
    """The :class:`SessionState` of a toolkit session (created on first use otherwise)."""
    info = session.info
    state: SessionState | None = info.get(STATE_KEY)
    if state is None:
        state = info[STATE_KEY] = SessionState()
    return state


def find_session_state(session: Session) -> SessionState | None:
    """The session's :class:`SessionState`, or None for a session asyncdb did not make."""
    state: SessionState | None = session.info.get(STATE_KEY)
    return state


class ToolkitSession(Session):
    """The sync Session class behind every AsyncSession asyncdb hands out.

    A distinct class so that asyncdb's session events (audit, cache invalidation)
    apply to toolkit sessions only, never to an application's own sessions.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The factory's info holds a template shared by all its sessions: copy it.
        template = self.info.get(STATE_KEY)
        self.info[STATE_KEY] = (
            dataclasses.replace(template) if isinstance(template, SessionState) else SessionState()
        )


class ToolkitAsyncSessionTransaction(AsyncSessionTransaction):
    """``begin()``/``begin_nested()``'s transaction, raising asyncdb errors."""


class ToolkitAsyncSession(AsyncSession):
    """An ``AsyncSession`` whose I/O methods raise asyncdb errors.

    A pool timeout becomes :class:`~asyncdb.PoolTimeoutError`, a unique violation
    :class:`~asyncdb.ConflictError`, and so on; the SQLAlchemy error stays chained.
    Static types are SQLAlchemy's: this class declares no signature of its own.
    """

    sync_session_class = ToolkitSession

    def begin(self) -> AsyncSessionTransaction:
        return ToolkitAsyncSessionTransaction(self)

    def begin_nested(self) -> AsyncSessionTransaction:
        return ToolkitAsyncSessionTransaction(self, nested=True)


async def _stream(self: AsyncSession, *args: Any, **kwargs: Any) -> Any:
    # The rows of a stream arrive while it is read: its result raises asyncdb errors
    # too (:mod:`._stream`). stream_scalars() calls stream(), then scalars().
    return toolkit_result(await AsyncSession.stream(self, *args, **kwargs))


for _name in TRANSLATED_METHODS:
    if hasattr(AsyncSession, _name):  # delete_all, merge_all: SQLAlchemy 2.1 only
        setattr(ToolkitAsyncSession, _name, translated(getattr(AsyncSession, _name)))
ToolkitAsyncSession.stream = functools.wraps(AsyncSession.stream)(translated(_stream))  # type: ignore[method-assign]
for _name in TRANSLATED_TRANSACTION_METHODS:
    setattr(
        ToolkitAsyncSessionTransaction,
        _name,
        translated(getattr(AsyncSessionTransaction, _name)),
    )
del _name


async def attempt_in_savepoint(
    session: AsyncSession,
    work: Callable[[], Awaitable[R]],
    refused: type[Exception] | tuple[type[Exception], ...] = AsyncDBError,
) -> R | None:
    """``work()`` in a SAVEPOINT of the session's transaction (sent when ``work`` first
    asks the session for its connection); None, rolled back to the SAVEPOINT, when it
    raised ``refused``: the database refused the rows, and the caller replays them the
    slow way, which names the failing row. A lost connection or a broken transaction is
    not the rows' fault: it propagates."""
    try:
        async with session.begin_nested():
            return await work()
    except (DatabaseUnavailableError, TransactionError):
        raise
    except refused:
        return None
