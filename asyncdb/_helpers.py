"""Module-level helpers with the seed's names: the process-wide manager and friends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from ._errors import ValidationError
from ._manager import AsyncDatabaseManager, ManagerState
from ._retry import backoff_delay, is_transaction_retryable
from ._session import ToolkitAsyncSession
from ._uow import AsyncUnitOfWork

__all__ = [
    "get_conn",
    "get_db_manager",
    "get_session",
    "init_database",
    "run_tx",
    "set_db_manager",
]

R = TypeVar("R")

_default: AsyncDatabaseManager | None = None
_connect_lock: asyncio.Lock | None = None


def get_db_manager() -> AsyncDatabaseManager:
    """The process-wide manager, built from ``DatabaseSettings.from_env()`` on first use.

    It is not connected until :func:`init_database` (or ``await db.connect()``) runs;
    :func:`get_session` and :func:`run_tx` connect it on demand.
    """
    global _default
    if _default is None or _default.state is ManagerState.DISPOSED:
        _default = AsyncDatabaseManager()
    return _default


def set_db_manager(db: AsyncDatabaseManager | None) -> AsyncDatabaseManager | None:
    """Replace the process-wide manager (tests, apps with their own set-up); returns the old one."""
    global _default
    previous, _default = _default, db
    return previous


async def _connected(db: AsyncDatabaseManager) -> AsyncDatabaseManager:
    global _connect_lock
    if db.state is ManagerState.CONNECTED:
        return db
    if _connect_lock is None:
        _connect_lock = asyncio.Lock()
    async with _connect_lock:
        if db.state is ManagerState.NEW:
            await db.connect()
    return db


@contextlib.asynccontextmanager
async def get_session(*, read_only: bool = False) -> AsyncIterator[ToolkitAsyncSession]:
    """``async with get_session() as s``: a session of the process-wide manager."""
    db = await _connected(get_db_manager())
    async with db.session(read_only=read_only) as session:
        yield session


#: The seed's other name for :func:`get_session`.
get_conn = get_session


async def run_tx(
    fn: Callable[..., Awaitable[R]],
    *args: Any,
    db: AsyncDatabaseManager | None = None,
    retries: int = 3,
    backoff: float = 0.05,
    isolation_level: str | None = None,
    **audit: Any,
) -> R:
    """Run ``await fn(uow, *args)`` in a fresh unit of work, retrying the whole of it.

    Retried (up to ``retries`` more times, with jittered exponential backoff) on a
    serialization failure (SQLSTATE 40001), a deadlock (40P01) or a dropped
    connection; integrity and validation errors are raised at once. ``audit``
    takes ``user_id``, ``session_id``, ``correlation_id`` for the unit.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        msg = f"retries must be a non-negative integer (got {retries!r})."
        raise ValidationError(msg)
    manager = await _connected(db if db is not None else get_db_manager())
    attempt = 0
    while True:
        try:
            async with AsyncUnitOfWork(manager, isolation_level=isolation_level, **audit) as uow:
                return await fn(uow, *args)
        except Exception as exc:
            if attempt >= retries or not is_transaction_retryable(exc):
                raise
            await asyncio.sleep(backoff_delay(attempt, backoff, cap=2.0))
            attempt += 1


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
