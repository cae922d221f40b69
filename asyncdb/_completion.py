"""How a unit of work ends: COMMIT or ROLLBACK and close, shielded from cancellation.

A cancel that arrives while COMMIT is in flight must not interrupt it (an interrupted
statement makes SQLAlchemy discard the connection, which on :memory: is the database):
the end runs in its own task to completion, and the cancel is re-raised afterwards.
A connection lost during COMMIT is :class:`CommitOutcomeUnknownError`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ._errors import DatabaseUnavailableError, commit_outcome_unknown

__all__ = [
    "Callback",
    "commit_or_report",
    "complete",
    "end_then_close",
    "quietly",
    "run_callbacks",
]

logger = logging.getLogger("asyncdb")

#: An ``on_commit`` callback: sync, or returning an awaitable.
Callback = Callable[[], "Awaitable[Any] | Any"]


async def end_then_close(session: AsyncSession, *, commit: bool, quiet: str | None = None) -> None:
    """COMMIT or ROLLBACK, then close the session (also when that raised).

    ``quiet`` names a rollback whose failure is logged rather than raised (the unit is
    already leaving with an exception). The session translates its own errors.
    """
    try:
        if quiet is not None:
            await quietly(session.rollback(), quiet)
        elif commit:
            await commit_or_report(session)
        else:
            await session.rollback()
    finally:
        await quietly(session.close(), "close the session")


async def commit_or_report(session: AsyncSession) -> None:
    """COMMIT; a connection lost meanwhile is :class:`CommitOutcomeUnknownError`.

    The flush ran before, so COMMIT was sent: the server may have committed, and the
    unit must say so rather than let ``run_tx`` run the work a second time.
    """
    try:
        await session.commit()
    except DatabaseUnavailableError as exc:
        raise commit_outcome_unknown(exc) from exc


async def complete(awaitable: Coroutine[Any, Any, None]) -> bool:
    """Await ``awaitable`` to the end even if this task is cancelled meanwhile.

    Returns True when a cancellation arrived (the caller re-raises it once its own
    bookkeeping is done); an exception of ``awaitable`` propagates.
    """
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
        except BaseException:
            break  # the task finished with an error, re-raised below
    error = task.exception()
    if error is not None:
        if cancelled:
            raise asyncio.CancelledError from error  # the cancellation is not swallowed
        raise error
    return cancelled


async def quietly(awaitable: Awaitable[None], what: str) -> None:
    """Clean-up that must not replace the error being handled: failures are logged."""
    try:
        await awaitable
    except Exception as exc:
        # A broken connection fails here too; SQLAlchemy has invalidated it already, and
        # closing the session hands it back to the pool, which discards it.
        logger.warning("Could not %s (%s)", what, type(exc).__name__)


async def run_callbacks(callbacks: list[Callback]) -> None:
    for callback in callbacks:
        try:
            result = callback()
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("An on_commit callback failed after a successful commit")
