"""AsyncDatabaseManager: settings in, pooled engine and AsyncSessions out."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from sqlalchemy import event, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session

from ._engine import JOURNAL_MODE, create_engine, option_engines
from ._errors import (
    AsyncDBError,
    ConfigurationError,
    DatabaseUnavailableError,
    TransactionError,
    exception_summary,
    translate,
)
from ._health import HealthReport
from ._metrics import Metrics
from ._retry import backoff_delay, is_auth_failure, is_connect_retryable
from ._session import ToolkitAsyncSession, ToolkitSession
from ._settings import DatabaseSettings

__all__ = ["AsyncDatabaseManager", "ManagerState", "StateError"]

logger = logging.getLogger("asyncdb")


class StateError(AsyncDBError):
    """The manager was used before ``connect()`` or after ``dispose()``."""


class ManagerState(enum.Enum):
    """Lifecycle of a manager: NEW → CONNECTED → DISPOSED (final)."""

    NEW = "new"
    CONNECTED = "connected"
    DISPOSED = "disposed"


@event.listens_for(ToolkitSession, "before_flush")
def _refuse_read_only_flush(session: Session, flush_context: Any, instances: Any) -> None:
    if session.info.get("read_only") and (session.new or session.dirty or session.deleted):
        msg = (
            "This session is read-only and cannot write. Use db.session() or an "
            "AsyncUnitOfWork without read_only=True for changes."
        )
        raise TransactionError(msg)


class TransactionObserver(Protocol):
    """Receives transaction figures from units of work (metrics is one observer)."""

    def on_transaction_begin(self) -> None: ...

    def on_transaction_end(self, outcome: str, duration: float) -> None: ...


class AsyncDatabaseManager:
    """Owns the engine(s) and hands out ``AsyncSession`` objects.

    ::

        async with AsyncDatabaseManager("postgresql+asyncpg://app@db/app") as db:
            async with db.session() as session:
                ...

    ``url_or_settings`` is a URL string, a :class:`DatabaseSettings`, or None to read
    ``ASYNCDB_*`` environment variables; ``overrides`` replace single settings.
    """

    def __init__(
        self, url_or_settings: str | URL | DatabaseSettings | None = None, **overrides: Any
    ) -> None:
        if isinstance(url_or_settings, DatabaseSettings):
            settings = url_or_settings.replace(**overrides) if overrides else url_or_settings
        elif url_or_settings is None:
            settings = DatabaseSettings.from_env(**overrides)
        elif isinstance(url_or_settings, (str, URL)):
            url = (
                url_or_settings
                if isinstance(url_or_settings, str)
                else url_or_settings.render_as_string(hide_password=False)
            )
            settings = DatabaseSettings(url=url, **_known(overrides))
        else:
            msg = "AsyncDatabaseManager takes a URL string, a DatabaseSettings, or None."
            raise ConfigurationError(msg)
        self.settings = settings
        self.metrics = Metrics(
            database=settings.parsed_url.database or settings.backend,
            slow_query_threshold=settings.slow_query_threshold,
            leak_threshold=settings.leak_threshold,
            enabled=settings.metrics,
        )
        self.state = ManagerState.NEW
        #: Attempts the last ``connect()`` made (1 when the first one succeeded).
        self.connect_attempts = 0
        self._engine: AsyncEngine | None = None
        self._engines: dict[str, AsyncEngine] = {}
        self._factories: dict[str, async_sessionmaker[ToolkitAsyncSession]] = {}
        self._observers: list[TransactionObserver] = [self.metrics]
        self._uninstall: list[Callable[[], None]] = []
        #: Shared per-manager state that other layers attach (cache registry, ...).
        self.extensions: dict[str, Any] = {}

    # -- lifecycle -------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.settings.backend

    @property
    def url(self) -> str:
        """The database URL with its password masked."""
        return self.settings.masked_url

    @property
    def engine(self) -> AsyncEngine:
        """The connected ``AsyncEngine``; raises :class:`StateError` otherwise."""
        self._check_connected()
        assert self._engine is not None
        return self._engine

    def _check_connected(self) -> None:
        if self.state is ManagerState.NEW:
            msg = (
                "The database manager is not connected. "
                "Call `await db.connect()` or use `async with db:` first."
            )
            raise StateError(msg)
        if self.state is ManagerState.DISPOSED:
            msg = (
                "The database manager was disposed and cannot be used again. "
                "Create a new AsyncDatabaseManager."
            )
            raise StateError(msg)

    async def connect(self) -> AsyncDatabaseManager:
        """Create the engine and open a first connection, retrying connection failures.

        Retries only connection-level failures (refused, reset, DNS, timeout, server
        starting up) with jittered exponential backoff, ``connect_retries`` attempts in
        all; bad credentials and bad database names fail at once.
        """
        if self.state is ManagerState.CONNECTED:
            msg = (
                "The database manager is already connected. "
                "Call connect() once, or use `async with db:`."
            )
            raise StateError(msg)
        if self.state is ManagerState.DISPOSED:
            self._check_connected()
        engine = create_engine(self.settings)
        try:
            await self._probe_with_retry(engine)
        except BaseException:
            await engine.dispose()
            raise
        self._install(engine)
        self.state = ManagerState.CONNECTED
        logger.info("Connected to %s", self.url)
        return self

    async def _probe_with_retry(self, engine: AsyncEngine) -> None:
        attempts = self.settings.connect_retries
        for attempt in range(1, attempts + 1):
            self.connect_attempts = attempt
            try:
                async with _no_transaction(engine, self.backend).connect() as conn:
                    await conn.exec_driver_sql("SELECT 1")
                    if self.backend == "sqlite":
                        raw = await conn.get_raw_connection()
                        record = raw._connection_record
                        if record is not None:
                            self.extensions[JOURNAL_MODE] = record.info.get(JOURNAL_MODE)
                return
            except Exception as exc:
                if is_auth_failure(exc):
                    msg = (
                        f"The server at {self.url} rejected the credentials or the database "
                        "name. Check the user, password and database in the URL."
                    )
                    raise ConfigurationError(msg) from exc
                retry = is_connect_retryable(exc)
                if not retry or attempt == attempts:
                    reason = exception_summary(exc) if not retry else type(exc).__name__
                    msg = (
                        f"Could not connect to {self.url} after {attempt} attempt(s) ({reason}). "
                        "Check that the server is running and reachable, or raise connect_retries."
                    )
                    raise DatabaseUnavailableError(msg) from exc
                delay = backoff_delay(attempt - 1, self.settings.retry_backoff)
                logger.warning(
                    "Connection attempt %d/%d to %s failed (%s); retrying in %.2f s",
                    attempt,
                    attempts,
                    self.url,
                    type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)

    def _install(self, engine: AsyncEngine) -> None:
        from ._instrument import instrument_engine

        self._engine = engine
        self._engines = {"default": engine, **option_engines(engine, self.backend)}
        options: dict[str, Any] = {
            "expire_on_commit": False,
            "class_": ToolkitAsyncSession,
        }
        self._factories = {
            name: async_sessionmaker(
                bind, info={"asyncdb_manager": self, "read_only": name == "read_only"}, **options
            )
            for name, bind in self._engines.items()
        }
        if self.settings.metrics:
            self._uninstall.append(instrument_engine(engine, self.metrics))

    async def dispose(self) -> None:
        """Close every pooled connection. The manager cannot be used afterwards.

        Disposing twice is allowed and does nothing the second time.
        """
        if self.state is ManagerState.DISPOSED:
            return
        engine, self._engine = self._engine, None
        self.state = ManagerState.DISPOSED
        for undo in self._uninstall:
            undo()
        self._uninstall.clear()
        if engine is not None:
            await engine.dispose()
            logger.info("Disposed the engine for %s", self.url)

    async def __aenter__(self) -> AsyncDatabaseManager:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.dispose()

    def __del__(self) -> None:
        if getattr(self, "state", None) is ManagerState.CONNECTED:
            warnings.warn(
                f"AsyncDatabaseManager for {self.url} was never disposed; "
                "use `async with db:` or `await db.dispose()`.",
                ResourceWarning,
                stacklevel=1,
                source=self,
            )

    def __repr__(self) -> str:
        return f"<AsyncDatabaseManager {self.url} state={self.state.value}>"

    # -- sessions --------------------------------------------------------------------

    def session(self, *, read_only: bool = False) -> ToolkitAsyncSession:
        """A new ``AsyncSession`` (``expire_on_commit=False``); use it as ``async with``.

        ``read_only=True`` starts read-only transactions (PostgreSQL ``READ ONLY``,
        SQLite deferred ``BEGIN``) and refuses to flush ORM changes.
        """
        self._check_connected()
        return self._factories["read_only" if read_only else "default"]()

    def autocommit_session(self) -> ToolkitAsyncSession:
        """A session whose statements run without BEGIN/COMMIT; for single reads."""
        self._check_connected()
        return self._factories["autocommit"]()

    @contextlib.contextmanager
    def bind_sessions_to(self, connection: AsyncConnection) -> Iterator[AsyncConnection]:
        """For the block, every session this manager hands out joins ``connection``.

        Sessions (and so units of work and repositories) run on ``connection`` and join
        the transaction the caller began on it through a SAVEPOINT: their commits release
        the savepoint, their rollbacks roll back to it, and the caller's final rollback
        undoes everything. This is SQLAlchemy's "joining a session into an external
        transaction" recipe, the basis of the ``asyncdb_transaction`` test fixture::

            async with db.engine.connect() as conn:
                await conn.begin()
                with db.bind_sessions_to(conn):
                    await run_code_that_commits(db)
                await conn.rollback()

        One connection cannot run two statements at once: code inside the block must
        not use the manager from concurrent tasks.
        """
        self._check_connected()
        saved = self._factories
        self._factories = {
            name: async_sessionmaker(
                **{**factory.kw, "bind": connection},
                class_=factory.class_,
                join_transaction_mode="create_savepoint",
            )
            for name, factory in saved.items()
        }
        try:
            yield connection
        finally:
            self._factories = saved

    # -- transaction observers -------------------------------------------------------

    def add_transaction_observer(self, observer: TransactionObserver) -> None:
        """Register ``observer`` to hear of every unit of work's begin and end."""
        self._observers.append(observer)

    def notify_transaction_begin(self) -> None:
        """Called by a unit of work when it begins."""
        for observer in self._observers:
            try:
                observer.on_transaction_begin()
            except Exception:  # an observer must never break a transaction
                logger.exception("A transaction observer failed")

    def notify_transaction_end(self, outcome: str, duration: float) -> None:
        """Called by a unit of work when it ends (``"commit"`` or ``"rollback"``)."""
        for observer in self._observers:
            try:
                observer.on_transaction_end(outcome, duration)
            except Exception:  # an observer must never break a transaction
                logger.exception("A transaction observer failed")

    # -- health ----------------------------------------------------------------------

    def pool_status(self) -> dict[str, Any]:
        """Size, checked-out and overflow figures of the pool (empty when not connected)."""
        if self._engine is None:
            return {}
        pool = self._engine.sync_engine.pool
        status: dict[str, Any] = {"class": type(pool).__name__}
        for name in ("size", "checkedin", "checkedout", "overflow"):
            getter = getattr(pool, name, None)
            if callable(getter):
                status[name if name != "checkedin" else "checked_in"] = getter()
        if "checkedout" in status:
            status["checked_out"] = status.pop("checkedout")
        if "overflow" in status:  # QueuePool counts from -size; report connections only
            status["overflow"] = max(0, status["overflow"])
        return status

    async def health_check(self, timeout: float = 5.0) -> HealthReport:
        """Probe the database with ``SELECT 1``; never raises on an unreachable server.

        Works before ``connect()`` too (with a throw-away connection), so a readiness
        probe can run before start-up finished.
        """
        started = time.perf_counter()
        error: str | None = None
        try:
            await asyncio.wait_for(self._ping(), timeout)
        except asyncio.TimeoutError:
            error = f"The database did not answer within {timeout:g} s."
        except Exception as exc:
            mapped = translate(exc)
            error = str(mapped) if isinstance(mapped, AsyncDBError) else type(exc).__name__
        latency = (time.perf_counter() - started) * 1000.0
        return HealthReport(
            healthy=error is None,
            latency_ms=round(latency, 3) if error is None else None,
            backend=self.backend,
            url=self.url,
            pool=self.pool_status(),
            metrics=self.metrics.snapshot(),
            error=error,
        )

    async def _ping(self) -> None:
        # Probes run without a transaction: on SQLite a BEGIN IMMEDIATE would make a
        # health check queue behind every writer.
        if self.state is ManagerState.CONNECTED:
            async with self._engines["autocommit"].connect() as conn:
                await conn.execute(text("SELECT 1"))
            return
        if self.state is ManagerState.DISPOSED:
            self._check_connected()
        engine = create_engine(self.settings.replace(pre_ping=False))
        try:
            async with _no_transaction(engine, self.backend).connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()


def _no_transaction(engine: AsyncEngine, backend: str) -> AsyncEngine:
    return option_engines(engine, backend)["autocommit"]


def _known(overrides: dict[str, Any]) -> dict[str, Any]:
    if "url" in overrides:
        msg = "Give the URL once: either as the first argument or as url=, not both."
        raise ConfigurationError(msg)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(DatabaseSettings)}
    if unknown:
        msg = f"Unknown setting(s): {', '.join(sorted(unknown))}. See DatabaseSettings fields."
        raise ConfigurationError(msg)
    return overrides
