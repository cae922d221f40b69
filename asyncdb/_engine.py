"""Per-backend engine policy: pool, connect arguments, SQLite transactions, liveness.

One function, :func:`create_engine`, turns settings into an ``AsyncEngine`` configured
for its backend:

* SQLite file: a queue pool, WAL (verified by reading the pragma's answer),
  ``foreign_keys=ON``, a busy timeout, and asyncdb emitting ``BEGIN`` itself. The
  sqlite3 driver's legacy mode skips BEGIN before SELECT and SAVEPOINT, so a rollback
  would not undo a released savepoint; and a plain deferred BEGIN lets two writers
  read the same value and then fail or lose an update. Writers therefore start with
  ``BEGIN IMMEDIATE``, read-only work with ``BEGIN``. Writers of one engine first queue
  in arrival order in this process (:mod:`._sqlite_gate`); SQLite's busy timeout is
  left for writers of other processes.
* SQLite, both kinds: each statement is one trip to aiosqlite's thread
  (:mod:`asyncdb._sqlite_cursor`; SQLAlchemy's cursor makes four), and ROLLBACK goes
  to the driver only while a transaction is open (:func:`_skip_idle_rollback`).
* SQLite ``:memory:``: one connection, which is the database. A pool of exactly one,
  never recycled, so concurrent tasks queue for it instead of interleaving two
  transactions on one connection (which SQLite cannot do).
* MariaDB/MySQL and DuckDB: see :mod:`asyncdb._backend_mysql` and
  :mod:`asyncdb._backend_duckdb`.
* PostgreSQL: a queue pool with size, overflow, timeout and recycle; the
  ``application_name`` and a server-side ``statement_timeout`` sent at connect.

Liveness without a round trip per checkout: ``pool_pre_ping`` pings on every checkout.
Here a checkout first asks asyncpg whether the socket is already closed (no I/O), and
pings only connections that sat idle longer than ``ping_idle_after``. A dead connection
raises ``InvalidatePoolError`` (a DisconnectionError): the pool drops it and every older
connection, and hands out a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from sqlalchemy import event, exc, pool
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

from ._backend_duckdb import duckdb_engine
from ._backend_mysql import mysql_engine
from ._settings import DatabaseSettings
from ._sqlite_cursor import use_one_trip_cursors
from ._sqlite_gate import WriterGate

__all__ = ["AUTOCOMMIT_OPTION", "READ_ONLY_OPTION", "create_engine", "option_engines"]

logger = logging.getLogger("asyncdb")

#: Execution option: the connection runs without BEGIN (each statement commits itself).
AUTOCOMMIT_OPTION = "asyncdb_autocommit"
#: Execution option: the transaction only reads (SQLite: deferred BEGIN).
READ_ONLY_OPTION = "asyncdb_read_only"
_CHECKIN_AT = "asyncdb_checkin_at"
JOURNAL_MODE = "asyncdb_journal_mode"


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    """Build the ``AsyncEngine`` for ``settings``, with its backend's pool and hooks."""
    common: dict[str, Any] = {"echo": settings.echo, "hide_parameters": True}
    if settings.backend == "sqlite":
        return _sqlite_engine(settings, common)
    if settings.backend == "mysql":
        engine = mysql_engine(settings, common, _queue_pool(settings))
        if settings.pre_ping:
            install_liveness_check(engine, settings.ping_idle_after)
        return engine
    if settings.backend == "duckdb":
        return duckdb_engine(settings, common, _queue_pool(settings, single=settings.is_memory))
    return _postgres_engine(settings, common)


def option_engines(
    engine: AsyncEngine, backend: str, *, pgbouncer: bool = False
) -> dict[str, AsyncEngine]:
    """Engines sharing ``engine``'s pool: ``autocommit`` reads and ``read_only`` work.

    Behind pgbouncer in transaction mode there is no autocommit: asyncpg prepares a
    statement and executes it in two exchanges, which pgbouncer may send to two server
    connections unless a transaction pins one; ``autocommit`` is then a plain engine.
    On MariaDB/MySQL too: the driver switches autocommit with a statement, so a checkout
    in AUTOCOMMIT costs ``SET AUTOCOMMIT = 1`` and, on return, ``SET AUTOCOMMIT = 0``, the
    isolation level set again and a ``COMMIT`` (seven round trips for a one-row create,
    against three for the statement in an implicit READ COMMITTED transaction).
    """
    if backend == "mysql":
        read_only = engine.execution_options(**{READ_ONLY_OPTION: True})
        return {"autocommit": engine, "read_only": read_only}
    if pgbouncer:
        read_only = engine.execution_options(**{READ_ONLY_OPTION: True}, postgresql_readonly=True)
        return {"autocommit": engine, "read_only": read_only}
    if backend in ("sqlite", "duckdb"):
        # DuckDB has no per-connection autocommit switch; its one-statement transaction
        # is as short.
        autocommit = engine.execution_options(**{AUTOCOMMIT_OPTION: True})
        read_only = engine.execution_options(**{READ_ONLY_OPTION: True})
    else:
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        read_only = engine.execution_options(**{READ_ONLY_OPTION: True}, postgresql_readonly=True)
    return {"autocommit": autocommit, "read_only": read_only}


def _queue_pool(settings: DatabaseSettings, *, single: bool = False) -> dict[str, Any]:
    """Pool arguments; ``single`` is the one-connection pool of an in-memory database."""
    recycle = settings.pool_recycle if settings.pool_recycle is not None else -1
    return {
        "poolclass": pool.AsyncAdaptedQueuePool,
        "pool_size": 1 if single else settings.pool_size,
        "max_overflow": 0 if single else settings.max_overflow,
        "pool_timeout": settings.pool_timeout,
        "pool_recycle": -1 if single else recycle,
    }


# -- SQLite ----------------------------------------------------------------------------


def _sqlite_engine(settings: DatabaseSettings, common: dict[str, Any]) -> AsyncEngine:
    connect_args = {"timeout": settings.busy_timeout}
    engine = create_async_engine(
        settings.url,
        connect_args=connect_args,
        **_queue_pool(settings, single=settings.is_memory),
        **common,
    )
    busy_ms = int(settings.busy_timeout * 1000)
    is_file = not settings.is_memory
    # One connection is the whole :memory: database: its pool already queues writers.
    gate = WriterGate(engine.sync_engine, settings.busy_timeout) if is_file else None

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        use_one_trip_cursors(dbapi_connection)
        # asyncdb emits BEGIN itself (see the module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if is_file:
                mode = _enable_wal(cursor, settings.busy_timeout)
                record.info[JOURNAL_MODE] = mode
                if mode != "wal":
                    logger.warning(
                        "SQLite refused WAL journal mode (got %r); concurrent readers will "
                        "block writers. Put the database file on a local filesystem.",
                        mode,
                    )
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        proxied = conn.connection
        if getattr(proxied.driver_connection, "in_transaction", False):
            # A COMMIT that failed (a deferred foreign key, say) leaves SQLite inside the
            # transaction while SQLAlchemy believes it ended, so the pool skips its reset.
            # Never let the next user see or extend that work.
            logger.warning("A pooled SQLite connection was still in a transaction; rolled back.")
            proxied.dbapi_connection.rollback()
        options = conn.get_execution_options()
        if options.get(AUTOCOMMIT_OPTION):
            return
        if options.get(READ_ONLY_OPTION):
            conn.exec_driver_sql("BEGIN")
            return
        if gate is not None:
            gate.acquire_for(proxied)  # its .info is the pool record's
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    _skip_idle_rollback(engine.sync_engine.dialect)
    return engine


def _skip_idle_rollback(dialect: Any) -> None:
    """Send ROLLBACK only when SQLite has a transaction open.

    Outside a transaction a ROLLBACK does nothing in SQLite, yet through aiosqlite each
    one is a round trip to the connection's thread, and SQLAlchemy sends two after every
    read (the session's or connection's end, then the pool's reset on return): two of a
    ``get_by_id``'s six. asyncdb emits BEGIN itself (the driver's autocommit mode), so
    the driver's ``in_transaction`` is SQLite's own word on whether a transaction is
    open. When it cannot be read (a connection already closed), the ROLLBACK is sent.
    """
    rollback = dialect.do_rollback
    if getattr(rollback, _SKIPS_IDLE, False):
        return

    def do_rollback(dbapi_connection: Any) -> None:
        try:
            idle = dbapi_connection.driver_connection.in_transaction is False
        except Exception:
            idle = False
        if not idle:
            rollback(dbapi_connection)

    setattr(do_rollback, _SKIPS_IDLE, True)
    dialect.do_rollback = do_rollback


_SKIPS_IDLE = "asyncdb_skips_idle_rollback"


def _enable_wal(cursor: Any, busy_timeout: float) -> str:
    """Switch to WAL and return the journal mode SQLite reports.

    Two processes opening a brand-new file at once can get "database is locked" here
    at once: SQLite does not apply the busy timeout to this pragma. Retry it, with a
    short backoff bounded by the busy timeout.
    """
    deadline = time.monotonic() + busy_timeout
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            row = cursor.fetchone()
            return str(row[0]).lower() if row else "unknown"
        except Exception as exc:
            if "locked" not in str(exc).lower() or time.monotonic() + delay > deadline:
                raise
            await_only(asyncio.sleep(delay))  # inside SQLAlchemy's greenlet: yields to the loop
            delay = min(delay * 2, 0.2)


# -- PostgreSQL ------------------------------------------------------------------------


def _postgres_engine(settings: DatabaseSettings, common: dict[str, Any]) -> AsyncEngine:
    server_settings = {"application_name": settings.application_name}
    connect_args: dict[str, Any] = {
        "timeout": settings.connect_timeout,
        "server_settings": server_settings,
    }
    if settings.statement_timeout is not None and settings.pgbouncer:
        # pgbouncer refuses a statement_timeout startup parameter (unless told to ignore
        # it): the client bounds each statement, and asyncpg cancels it on the server.
        connect_args["command_timeout"] = settings.statement_timeout
    elif settings.statement_timeout is not None:
        server_settings["statement_timeout"] = str(int(settings.statement_timeout * 1000))
        # Client-side backstop for a server that stops answering mid-statement.
        connect_args["command_timeout"] = settings.statement_timeout + settings.connect_timeout
    if settings.statement_cache_size is not None:
        connect_args["statement_cache_size"] = settings.statement_cache_size
    if settings.pgbouncer:
        connect_args.update(pgbouncer_connect_args())
    engine = create_async_engine(
        settings.url, connect_args=connect_args, **_queue_pool(settings), **common
    )
    if settings.pre_ping:
        install_liveness_check(engine, settings.ping_idle_after)
    return engine


def pgbouncer_connect_args() -> dict[str, Any]:
    """asyncpg arguments for pgbouncer in transaction mode (SQLAlchemy's documented recipe).

    A transaction may run on any server connection, so a statement prepared on one is
    unknown on the next, and asyncpg's numbered names collide across clients: no
    statement caches (asyncpg's and SQLAlchemy's), and a unique name per statement.
    """
    return {
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
        "prepared_statement_name_func": _unique_statement_name,
    }


def _unique_statement_name() -> str:
    return f"__asyncdb_{uuid.uuid4().hex}__"


def install_liveness_check(engine: AsyncEngine, idle_after: float) -> None:
    """Check connections at checkout: locally always, with a ping after ``idle_after`` s."""
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKIN_AT] = time.monotonic()

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[_CHECKIN_AT] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        is_closed = getattr(driver, "is_closed", None)
        if is_closed is not None and is_closed():
            msg = "connection was closed by the server"
            raise exc.InvalidatePoolError(msg)
        last = record.info.get(_CHECKIN_AT)
        if last is not None and time.monotonic() - last <= idle_after:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as err:
            msg = "connection failed its liveness ping"
            raise exc.InvalidatePoolError(msg) from err
        record.info[_CHECKIN_AT] = time.monotonic()
