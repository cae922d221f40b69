"""The process-wide default manager: one slot, below the unit of work.

The unit of work (``AsyncUnitOfWork()`` without a manager) and the module-level helpers
both read it, so it lives one layer under them.
"""

from __future__ import annotations

import asyncio
import weakref

from ._manager import AsyncDatabaseManager, ManagerState

__all__ = ["get_db_manager", "set_db_manager"]

#: One lock per manager, so that concurrent first uses connect it once.
_CONNECT_LOCKS: weakref.WeakKeyDictionary[AsyncDatabaseManager, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)

_default: AsyncDatabaseManager | None = None


def get_db_manager() -> AsyncDatabaseManager:
    """The process-wide manager, built from ``DatabaseSettings.from_env()`` on first use.

    It is not connected until :func:`init_database` (or ``await db.connect()``) runs;
    :func:`get_session` and :func:`run_tx` connect it on demand. A disposed default
    manager is replaced by a fresh one. :func:`set_db_manager` installs another.
    """
    global _default
    if _default is None or _default.state is ManagerState.DISPOSED:
        _default = AsyncDatabaseManager()
    return _default


def set_db_manager(db: AsyncDatabaseManager | None) -> AsyncDatabaseManager | None:
    """Replace the process-wide manager (tests, apps with their own set-up); returns the old one.

    ``None`` makes the next :func:`get_db_manager` build one from the environment again::

        previous = set_db_manager(test_db)
        try:
            ...
        finally:
            set_db_manager(previous)
    """
    global _default
    previous, _default = _default, db
    return previous


async def _connected(db: AsyncDatabaseManager) -> AsyncDatabaseManager:
    """``db``, connected once even when many tasks ask at the same time."""
    if db.state is not ManagerState.NEW:
        return db  # connected, or disposed: db.session() then raises a clear StateError
    # Per manager (a manager lives on one event loop; a module-wide lock would be shared
    # between the loops of successive asyncio.run() calls).
    lock = _CONNECT_LOCKS.setdefault(db, asyncio.Lock())
    async with lock:
        if db.state is ManagerState.NEW:
            await db.connect()
    return db
