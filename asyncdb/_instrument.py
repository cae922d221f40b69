"""Engine and pool event hooks that feed :class:`~asyncdb._metrics.Metrics`.

Statements are timed at the DBAPI cursor call, the layer OpenTelemetry's SQLAlchemy
instrumentation hooks with ``before_cursor_execute`` / ``after_cursor_execute``, so SQL
from ORM flushes, ``executemany`` and insertmanyvalues batches is timed like any other.
The hooks are the dialect's ``do_execute`` / ``do_executemany`` /
``do_execute_no_params`` events rather than those two engine events, for cost: any
listener on an engine event makes SQLAlchemy build joined event dispatchers for every
new Connection, and each session opens one. Measured on PostgreSQL single-row reads, one
no-op ``after_cursor_execute`` listener alone cost about 5 % of client CPU; dialect
events are dispatched from the dialect and cost nothing per connection. Each hook calls
the dialect's own method, as SQLAlchemy would, between two clock reads, and records the
statement (failed or not) in one place. ``handle_error`` counts the errors that carry no
timed statement (a failed COMMIT, say). A ``do_execute`` listener of the application
that runs the statement itself and returns True keeps it from being timed.

Pool figures come from the pool's ``connect`` / ``checkout`` / ``checkin`` / ``detach`` /
``invalidate`` / ``close`` events, and the checkout wait from timing ``Pool.connect()``.
Bound parameter values are never looked at.

Leak detection: at checkout the pool hook notes the time and a short stack of the
caller (frames outside SQLAlchemy, asyncdb and the standard library); a connection held
past ``leak_threshold`` is reported at checkin, and a timer on the event loop (every
half threshold) reports connections that are still out.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
import sysconfig
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import sqlalchemy
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool

from ._context import get_audit_context
from ._health import pool_status
from ._metrics import CallFrame, Metrics

__all__ = ["call_site", "instrument_engine"]

logger = logging.getLogger("asyncdb")

# greenlet ships without type information that mypy accepts; only getcurrent is used.
_getcurrent: Callable[[], Any] = importlib.import_module("greenlet").getcurrent

#: Frames of the caller kept for a leak report.
STACK_DEPTH = 3
_MIN_WATCH_INTERVAL = 0.05


def _noop() -> None:
    return None


def instrument_engine(engine: AsyncEngine, metrics: Metrics) -> Callable[[], None]:
    """Attach the timing hooks to ``engine``; returns a function that removes them.

    Also binds the pool gauges to ``metrics`` and, when ``metrics.leak_threshold`` is
    set and an event loop is running, starts the leak watchdog (a loop timer).
    """
    if not metrics.enabled:
        return _noop
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect
    perf = time.perf_counter
    record_query = metrics.record_query
    failures = _FailureLog()
    # The exception a timed statement just raised: handle_error, which SQLAlchemy calls
    # next on the same greenlet, must not count it a second time.
    just_failed: list[BaseException | None] = [None]

    def record_statement(statement: str, duration: float, error: BaseException | None) -> None:
        try:
            if error is not None:
                just_failed[0] = error
            record_query(statement, duration, error is not None)
        except Exception:
            failures.report()

    do_execute = dialect.do_execute
    do_executemany = dialect.do_executemany
    do_execute_no_params = dialect.do_execute_no_params

    def timed_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        t0 = perf()
        try:
            do_execute(cursor, statement, parameters, context)
        except BaseException as error:
            record_statement(statement, perf() - t0, error)
            raise
        record_statement(statement, perf() - t0, None)
        return True  # executed: SQLAlchemy must not run it again

    def timed_executemany(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
        t0 = perf()
        try:
            do_executemany(cursor, statement, parameters, context)
        except BaseException as error:
            record_statement(statement, perf() - t0, error)
            raise
        record_statement(statement, perf() - t0, None)
        return True

    def timed_execute_no_params(cursor: Any, statement: str, context: Any) -> bool:
        t0 = perf()
        try:
            do_execute_no_params(cursor, statement, context)
        except BaseException as error:
            record_statement(statement, perf() - t0, error)
            raise
        record_statement(statement, perf() - t0, None)
        return True

    def handle_error(ctx: Any) -> None:
        if ctx.original_exception is just_failed[0]:
            just_failed[0] = None  # counted with its statement
            return
        if not ctx.is_pre_ping:
            metrics.record_error()

    wrapped: list[Pool] = []
    active = [True]

    def wrap_pool(pool: Pool) -> None:
        # No pool event fires before a checkout starts waiting, so time Pool.connect().
        original = pool.connect

        def connect() -> Any:
            t0 = perf()
            timed_out = False
            try:
                return original()
            except exc.TimeoutError:
                timed_out = True
                raise
            finally:
                metrics.record_checkout_wait(perf() - t0, timed_out)

        setattr(pool, "connect", connect)  # noqa: B010 - an instance attribute shadows the method
        wrapped.append(pool)

    track_leaks = metrics.leak_threshold is not None

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        try:
            if active[0] and sync_engine.pool is not wrapped[-1]:
                wrap_pool(sync_engine.pool)  # the engine was disposed and got a new pool
            if track_leaks:
                metrics.on_checkout(record, call_site(), get_audit_context().correlation_id)
            else:
                metrics.on_checkout(record)
        except Exception:
            failures.report()

    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        metrics.on_checkin(record)

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        metrics.on_connect()

    def on_invalidate(dbapi_connection: Any, record: Any, exception: Any) -> None:
        metrics.on_invalidate()

    def on_close(dbapi_connection: Any, record: Any) -> None:
        metrics.on_close()

    listeners: list[tuple[str, Callable[..., Any]]] = [
        ("do_execute", timed_execute),
        ("do_executemany", timed_executemany),
        ("do_execute_no_params", timed_execute_no_params),
        ("handle_error", handle_error),
        ("connect", on_connect),
        ("checkout", on_checkout),
        ("checkin", on_checkin),
        ("detach", on_checkin),
        ("invalidate", on_invalidate),
        ("close", on_close),
    ]
    for name, fn in listeners:
        event.listen(sync_engine, name, fn)
    wrap_pool(sync_engine.pool)
    # Connections opened before instrumentation (connect()'s probe) are pooled already.
    for _ in range(_count(sync_engine.pool, "checkedin")):
        metrics.on_connect()
    metrics.bind_pool(lambda: pool_status(sync_engine.pool))
    stop_watchdog = _start_watchdog(metrics) if track_leaks else _noop

    def remove() -> None:
        active[0] = False
        stop_watchdog()
        for name, fn in listeners:
            # A pool recreated by engine.dispose() may no longer hold the listener.
            with contextlib.suppress(exc.InvalidRequestError):
                event.remove(sync_engine, name, fn)
        for pool in wrapped:
            if "connect" in vars(pool):
                delattr(pool, "connect")
        wrapped.clear()
        metrics.bind_pool(None)

    return remove


def _count(pool: Pool, method: str) -> int:
    getter = getattr(pool, method, None)
    value = getter() if callable(getter) else 0
    return value if isinstance(value, int) else 0


def _start_watchdog(metrics: Metrics) -> Callable[[], None]:
    """Every half ``leak_threshold``, report connections still out past the threshold."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _noop  # no loop to run on: leaks are still reported at checkin
    handle: asyncio.TimerHandle | None = None

    def interval() -> float:
        return max((metrics.leak_threshold or 60.0) / 2, _MIN_WATCH_INTERVAL)

    def tick() -> None:
        nonlocal handle
        try:
            metrics.check_leaks()
        except Exception:  # pragma: no cover - a logging handler failed
            logger.exception("The connection leak check failed")
        finally:
            handle = loop.call_later(interval(), tick)

    handle = loop.call_later(interval(), tick)

    def stop() -> None:
        if handle is not None:
            handle.cancel()

    return stop


class _FailureLog:
    """Metrics must never break a query: log a failing hook once, then stay quiet."""

    def __init__(self) -> None:
        self.reported = False

    def report(self) -> None:
        if not self.reported:
            self.reported = True
            logger.warning("asyncdb metrics hook failed; metrics may be off", exc_info=True)


# -- call sites ------------------------------------------------------------------------

_SQLALCHEMY_DIR = os.path.dirname(sqlalchemy.__file__) + os.sep
_ASYNCDB_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STDLIB_DIRS = tuple(
    {
        os.path.join(sysconfig.get_paths()[key], "")
        for key in ("stdlib", "platstdlib")
        if key in sysconfig.get_paths()
    }
)
_USER, _ASYNCDB, _INTERNAL = 0, 1, 2
_kinds: dict[str, int] = {}


def _kind(filename: str) -> int:
    kind = _kinds.get(filename)
    if kind is None:
        if filename.startswith(_SQLALCHEMY_DIR) or filename.startswith("<"):
            kind = _INTERNAL
        elif filename.startswith(_ASYNCDB_DIR):
            kind = _ASYNCDB
        elif filename.startswith(_STDLIB_DIRS) and not (
            "site-packages" in filename or "dist-packages" in filename
        ):
            kind = _INTERNAL
        else:
            kind = _USER
        if len(_kinds) > 10_000:  # pragma: no cover - generated code without end
            _kinds.clear()
        _kinds[filename] = kind
    return kind


def call_site(depth: int = STACK_DEPTH) -> list[CallFrame]:
    """The innermost ``depth`` frames of the caller outside SQLAlchemy and the stdlib.

    Frames inside asyncdb are used only when no application frame is found. Under
    asyncio, SQLAlchemy runs the engine in a greenlet whose stack holds SQLAlchemy's
    frames (or a ``run_sync`` function) and ends at the greenlet; the code that awaits
    is in the parent greenlet, so the walk starts there. This runs at every checkout,
    and each frame visited costs a frame object on Python 3.11+: the walk skips the
    child's frames and ends with the innermost run of application frames (past it lie
    the event loop's frames), and keeps (code, offset) pairs whose line numbers are
    looked up only if a leak is reported.
    """
    user: list[CallFrame] = []
    own: list[CallFrame] = []
    kinds = _kinds
    glet = _getcurrent()
    frame: FrameType | None
    if glet.parent is not None:
        glet = glet.parent
        frame = glet.gr_frame
    else:
        frame = sys._getframe(1)
    while True:
        while frame is not None:
            code = frame.f_code
            kind = kinds.get(code.co_filename)
            if kind is None:
                kind = _kind(code.co_filename)
            if kind == _USER:
                user.append((code, frame.f_lasti))
                if len(user) >= depth:
                    return user
            elif user:
                return user
            elif kind == _ASYNCDB and len(own) < depth:
                own.append((code, frame.f_lasti))
            frame = frame.f_back
        glet = glet.parent
        if glet is None:
            return user or own
        frame = glet.gr_frame
