"""Transaction isolation levels of a unit of work: which names are valid, and how a
unit's session gets its level (on the bind, for every transaction the unit runs)."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncSession

from ._capabilities import supports
from ._errors import ConfigurationError, TransactionError

if TYPE_CHECKING:
    from ._manager import AsyncDatabaseManager

__all__ = ["ISOLATION_LEVELS", "apply_isolation_level", "check_isolation_level"]

ISOLATION_LEVELS = frozenset(
    {"SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED", "READ UNCOMMITTED"}
)

#: Per manager: (bind id, isolation level) -> the option engine (not free to build).
_ISOLATED_BINDS: weakref.WeakKeyDictionary[Any, dict[tuple[int, str], Engine]] = (
    weakref.WeakKeyDictionary()
)


def check_isolation_level(level: str | None) -> str | None:
    """``level`` in upper case, or None; a name outside :data:`ISOLATION_LEVELS` is a
    :class:`ConfigurationError` that lists the valid ones."""
    if level is None:
        return None
    if not isinstance(level, str) or level.upper() not in ISOLATION_LEVELS:
        allowed = ", ".join(sorted(ISOLATION_LEVELS))
        msg = f"isolation_level must be one of {allowed} (got {level!r})."
        raise ConfigurationError(msg)
    return level.upper()


def apply_isolation_level(db: AsyncDatabaseManager, session: AsyncSession, level: str) -> None:
    """Run every transaction of ``session`` at ``level`` (where the backend has levels:
    SQLite transactions are always serializable and ignore it).

    Set on the bind, not on one connection: every transaction of the unit (also after
    an explicit commit) gets the level, and the pool resets it on checkin.
    """
    if not supports(db.backend, "isolation_levels"):
        return
    bind = session.sync_session.bind
    if not isinstance(bind, Engine):
        msg = (
            f"Cannot use isolation_level={level!r}: this manager's sessions are bound to "
            "one connection whose transaction has already begun (bind_sessions_to, the "
            "asyncdb_transaction fixture). Run such code against the manager alone."
        )
        raise TransactionError(msg)
    cache = _ISOLATED_BINDS.setdefault(db, {})
    key = (id(bind), level)
    if key not in cache:
        cache[key] = bind.execution_options(isolation_level=level)
    session.sync_session.bind = cache[key]
