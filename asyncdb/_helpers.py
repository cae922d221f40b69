"""Module-level helpers with the seed's names: the process-wide manager and friends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from ._errors import CommitOutcomeUnknownError, ConfigurationError
from ._filters import check_int
from ._manager import AsyncDatabaseManager
from ._registry import _connected, get_db_manager, set_db_manager
from ._retry import backoff_delay, is_transaction_retryable
from ._session import ToolkitAsyncSession
from ._uow import AsyncUnitOfWork, active_unit_for

__all__ = [
    "DEFAULT_TX_BACKOFF",
    "DEFAULT_TX_RETRIES",
    "get_conn",
    "get_db_manager",
    "get_session",
    "init_database",
    "run_tx",
    "set_db_manager",
]

logger = logging.getLogger("asyncdb")

R = TypeVar("R")

#: Retries after the first attempt; see :func:`run_tx` for the trade-off.
DEFAULT_TX_RETRIES = 3
#: Base delay in seconds of run_tx's jittered exponential backoff.
DEFAULT_TX_BACKOFF = 0.05
#: Longest single wait between two attempts, in seconds.
MAX_TX_BACKOFF = 2.0


@contextlib.asynccontextmanager
async def get_session(*, read_only: bool = False) -> AsyncIterator[ToolkitAsyncSession]:
    """``async with get_session() as s``: a session of the process-wide manager.

    The manager is connected on first use. Nothing is committed for you: call
    ``await s.commit()``, or use :class:`AsyncUnitOfWork` or :func:`run_tx` for a
    managed transaction. ``read_only=True`` gives a session that cannot write.
    """
    db = await _connected(get_db_manager())
    async with db.session(read_only=read_only) as session:
        yield session


#: The seed's other name for :func:`get_session`.
get_conn = get_session


async def run_tx(
    fn: Callable[..., Awaitable[R]],
    *args: Any,
    db: AsyncDatabaseManager | None = None,
    retries: int = DEFAULT_TX_RETRIES,
    backoff: float = DEFAULT_TX_BACKOFF,
    isolation_level: str | None = None,
    **audit: Any,
) -> R:
    """Run ``await fn(uow, *args)`` in a fresh unit of work, retrying the whole of it.

    ::

        async def transfer(uow, src, dst, amount):
            accounts = uow.get_repository(Account)
            ...

        await run_tx(transfer, 1, 2, 10, isolation_level="SERIALIZABLE", user_id=42)

    A serialization failure (SQLSTATE 40001), a deadlock (40P01) or a dropped
    connection rolls the unit back and runs ``fn`` again, up to ``retries`` more
    times, after a jittered exponential wait (``backoff`` seconds doubled per attempt,
    at most 2 s). Anything else, integrity and validation errors included, is raised
    at once; after the last attempt the error is raised too. ``fn`` must be safe to
    run more than once: side effects belong in ``uow.on_commit``. ``audit`` takes
    ``user_id``, ``session_id``, ``correlation_id`` (and extra keys) for the unit;
    ``db`` defaults to :func:`get_db_manager` (connected on first use).

    The default of 3 retries rides out the occasional conflict without letting a
    failure drag on. A hot row under heavy contention (dozens of SERIALIZABLE writers
    on one counter) needs more, and each retry adds latency: raise ``retries`` for
    such a function, or better, remove the conflict (``UPDATE ... SET n = n + 1``,
    ``SELECT ... FOR UPDATE``).

    Called while a unit of work of ``db`` is active in the task, ``fn`` joins it as a
    SAVEPOINT and runs once: a conflict aborts the outer transaction, so only the
    outermost unit can be retried.
    """
    check_int("retries", retries, 0, 100, error=ConfigurationError)
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0 <= backoff <= 60:
        msg = f"backoff must be a number of seconds from 0 to 60 (got {backoff!r})."
        raise ConfigurationError(msg)
    manager = await _connected(db if db is not None else get_db_manager())
    if active_unit_for(manager) is not None:
        async with AsyncUnitOfWork(manager, isolation_level=isolation_level, **audit) as uow:
            return await fn(uow, *args)
    attempt = 0
    while True:
        try:
            async with AsyncUnitOfWork(manager, isolation_level=isolation_level, **audit) as uow:
                return await fn(uow, *args)
        except Exception as exc:
            if (
                attempt >= retries
                or isinstance(exc, CommitOutcomeUnknownError)
                or not is_transaction_retryable(exc)
            ):
                raise
            delay = backoff_delay(attempt, backoff, cap=MAX_TX_BACKOFF)
            attempt += 1
            logger.debug(
                "Transaction %s failed on attempt %d of %d (%s); retrying in %.3f s",
                getattr(fn, "__qualname__", repr(fn)),
                attempt,
                retries + 1,
                type(exc).__name__,
                delay,
            )
            await asyncio.sleep(delay)


async def init_database(
    db: AsyncDatabaseManager | None = None, *, auto_migrate: bool = True
) -> AsyncDatabaseManager:
    """Connect the (process-wide) manager and bring the toolkit's tables up to date.

    With ``auto_migrate=True`` the toolkit's Alembic migrations run to ``head``
    (safe to call from several processes at once on PostgreSQL: an advisory lock
    serializes them). Returns the connected manager.
    """
    manager = await _connected(db if db is not None else get_db_manager())
    if auto_migrate:
        from ._migrate import migrate

        await migrate(manager)
    return manager
