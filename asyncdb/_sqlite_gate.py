"""A fair, in-process queue for SQLite writers of one engine.

SQLite serves writers through its busy handler, which sleeps and polls: under
contention it is not first-come first-served, so with 30 concurrent writers some wait
past ``busy_timeout`` while the whole work takes far less. Writers of one engine in this
process therefore queue here, in arrival order (``asyncio.Lock`` wakes its waiters FIFO),
before ``BEGIN IMMEDIATE``: SQLite's own busy wait is left for other processes.

The gate is taken in the engine's ``begin`` event and given back when the connection
returns to the pool (after COMMIT or ROLLBACK, since a session hands its connection
back at the end of each transaction), or when the connection is invalidated or closed.
Waiting is bounded by ``busy_timeout``: past it the writer gets a :class:`RetryableError`,
exactly as if SQLite had answered "database is locked".
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.util import await_only

from ._errors import RetryableError

__all__ = ["WriterGate"]

_HOLDS = "asyncdb_holds_writer_gate"


class WriterGate:
    """One FIFO lock per engine; see the module docstring."""

    def __init__(self, engine: Engine, busy_timeout: float) -> None:
        self._lock = asyncio.Lock()
        self._busy_timeout = busy_timeout
        for name in ("checkin", "invalidate", "close", "close_detached"):
            event.listen(engine, name, self._release_for)

    def acquire_for(self, record: Any) -> None:
        """Take the gate for the connection whose pool record (or fairy) is ``record``.

        A no-op when that connection holds it already (a second transaction on the
        same checked-out connection).
        """
        if record.info.get(_HOLDS):
            return
        try:
            await_only(asyncio.wait_for(self._lock.acquire(), self._busy_timeout))
        except asyncio.TimeoutError as exc:
            msg = (
                f"The SQLite database stayed locked by other writers of this process for "
                f"busy_timeout ({self._busy_timeout:g} s). Run the transaction again "
                "(asyncdb.run_tx does), shorten write transactions, or raise busy_timeout."
            )
            raise RetryableError(msg) from exc
        record.info[_HOLDS] = True

    def _release_for(self, dbapi_connection: Any, record: Any = None, *_: Any) -> None:
        info = getattr(record, "info", None)
        if info is not None and info.pop(_HOLDS, False):
            self._lock.release()
