"""The session classes asyncdb hands out: SQLAlchemy's, with errors translated.

Every I/O coroutine method of ``AsyncSession`` (and of the transaction objects that
``begin()``/``begin_nested()`` return) raises asyncdb errors. The wrappers are
installed at import time, outside what a type checker reads, so a user's mypy still
sees SQLAlchemy's own signatures and overloads: ``await session.execute(select(User))``
is a ``Result[tuple[User]]``, not ``Any``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction
from sqlalchemy.orm import Session

from ._errors import translate

__all__ = ["TRANSLATED_METHODS", "ToolkitAsyncSession", "ToolkitSession"]

#: The I/O coroutine methods of AsyncSession that raise asyncdb errors here.
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


class ToolkitSession(Session):
    """The sync Session class behind every AsyncSession asyncdb hands out.

    A distinct class so that asyncdb's session events (audit, cache invalidation)
    apply to toolkit sessions only, never to an application's own sessions.
    """


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


def _translated(
    method: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    # try/except rather than the translate_errors() context manager: one frame less on
    # every query.
    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except (sa_exc.SQLAlchemyError, OSError) as exc:
            mapped = translate(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    wrapper.__asyncdb_translated__ = True  # type: ignore[attr-defined]
    return wrapper


for _name in TRANSLATED_METHODS:
    setattr(ToolkitAsyncSession, _name, _translated(getattr(AsyncSession, _name)))
for _name in TRANSLATED_TRANSACTION_METHODS:
    setattr(
        ToolkitAsyncSessionTransaction,
        _name,
        _translated(getattr(AsyncSessionTransaction, _name)),
    )
del _name
