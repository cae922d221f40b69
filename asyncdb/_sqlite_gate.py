"""A fair, in-process queue for SQLite writers of one engine.

SQLite serves writers through its busy handler, which sleeps and polls: under
contention it is not first-come first-served, so with 30 concurrent writers some wait
past ``busy_timeout`` while the whole work takes far less. Writers of one engine in this
process therefore queue here, in arrival order (``asyncio.Lock`` wakes its waiters FIFO),
before ``BEGIN IMMEDIATE``: SQLite's own busy wait is left for other processes.

The gate is taken in the engine's ``begin`` event and given back when the connection
returns to the pool (after COMMIT or ROLLBACK, since a session hands its connection
back at the end of each transaction), or when the connection is invalidated or closed.
A writer gives up when the gate stays with one holder for ``busy_timeout`` (a queue that
keeps moving is not a timeout): it gets a :class:`RetryableError`, exactly as if SQLite
had answered "database is locked".
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
        self._handoffs = 0
        for name in ("checkin", "invalidate", "close", "close_detached"):
            event.listen(engine, name, self._release_for)

    def acquire_for(self, record: Any) -> None:
        """Take the gate for the connection whose pool record (or fairy) is ``record``.

        A no-op when that connection holds it already (a second transaction on the
        same checked-out connection).
        """
        if record.info.get(_HOLDS):
            return
        await_only(self._acquire())
        record.info[_HOLDS] = True

    async def _acquire(self) -> None:
        """Wait in line; fail only when the gate stays with one holder past busy_timeout.

        A long queue that keeps moving is not a lock timeout: the wait restarts each
        time the gate changes hands, so 30 writers behind each other all get through,
        while a writer stuck behind one that never commits gets its error after
        ``busy_timeout``. The waiter keeps its place in line throughout.
        """
        attempt = asyncio.ensure_future(self._lock.acquire())
        try:
            while True:
                handoffs = self._handoffs
                done, _ = await asyncio.wait({attempt}, timeout=self._busy_timeout)
                if done:
                    attempt.result()
                    return
                if self._handoffs == handoffs:
                    break
        except BaseException:
            self._abandon(attempt)
            raise
        self._abandon(attempt)
        msg = (
            f"The SQLite database stayed locked by another writer of this process for "
            f"busy_timeout ({self._busy_timeout:g} s). Run the transaction again "
            "(asyncdb.run_tx does), shorten write transactions, or raise busy_timeout."
        )
        raise RetryableError(msg)

    def _abandon(self, attempt: asyncio.Future[Any]) -> None:
        """Leave the line; if the gate was granted meanwhile, hand it on."""
        if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
            self._release()
        else:
            attempt.cancel()

    def _release(self) -> None:
        self._handoffs += 1
        self._lock.release()

    def _release_for(self, dbapi_connection: Any, record: Any = None, *_: Any) -> None:
        info = getattr(record, "info", None)
        if info is not None and info.pop(_HOLDS, False):
            self._release()
