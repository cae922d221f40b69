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

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session

from ._engine import create_engine, option_engines
from ._errors import AsyncDBError, ConfigurationError, StateError, TransactionError
from ._health import HealthReport
from ._instrument import instrument_engine
from ._metrics import Metrics
from ._probe import connect_with_retry, node_health, ping, ping_new_engine, pool_figures
from ._routing import ReplicaNode, Route, Router, check_route
from ._session import (
    STATE_KEY,
    SessionState,
    ToolkitAsyncSession,
    ToolkitSession,
    find_session_state,
    session_state,
)
from ._settings import DatabaseSettings
from ._translate import translate

__all__ = ["AsyncDatabaseManager", "ManagerState", "StateError"]

logger = logging.getLogger("asyncdb")


class ManagerState(enum.Enum):
    """Lifecycle of a manager: NEW → CONNECTED → DISPOSED (final)."""

    NEW = "new"
    CONNECTED = "connected"
    DISPOSED = "disposed"


@event.listens_for(ToolkitSession, "before_flush")
def _refuse_read_only_flush(session: Session, flush_context: Any, instances: Any) -> None:
    if session_state(session).read_only and (session.new or session.dirty or session.deleted):
        msg = (
            "This session is read-only and cannot write. Use db.session() or an "
            "AsyncUnitOfWork without read_only=True for changes."
        )
        raise TransactionError(msg)


@event.listens_for(ToolkitSession, "before_commit")
def _note_write(session: Session) -> None:
    # Read-your-writes: a COMMIT sent to the primary keeps this task's reads there a
    # while. Noted before the COMMIT is sent, so a commit whose outcome is unknown
    # (CommitOutcomeUnknownError) keeps them there too: it may have committed.
    if session.get_nested_transaction() is not None:
        return  # a SAVEPOINT's release, not the outermost COMMIT
    state = find_session_state(session)
    if state is None or state.manager is None or state.read_only or state.node is not None:
        return
    router = state.manager.router
    if router is not None:
        router.note_write()


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
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Attempts the last ``connect()`` made (1 when the first one succeeded).
        self.connect_attempts = 0
        self._engine: AsyncEngine | None = None
        self._engines: dict[str, AsyncEngine] = {}
        self._factories: dict[str, async_sessionmaker[ToolkitAsyncSession]] = {}
        self._observers: list[TransactionObserver] = [self.metrics]
        self._uninstall: list[Callable[[], None]] = []
        #: SQLite's journal mode as the first connection set it (None elsewhere).
        self.journal_mode: str | None = None
        # Read replicas (docs/scaling.md): the router, and session factories per node.
        self._router: Router | None = None
        self._node_factories: dict[str, dict[str, async_sessionmaker[ToolkitAsyncSession]]] = {}
        self._sessions_bound = False

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
        if self._loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                return  # sync code (a repr, a sync helper): no loop to compare
            if running is not self._loop:
                msg = (
                    "This database manager was connected on another event loop. Its pooled "
                    "connections belong to that loop: create and connect one manager per "
                    "event loop (in tests, give the manager the same scope as the loop)."
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
            self.journal_mode = await connect_with_retry(
                engine, self.settings, on_attempt=self._count_attempt
            )
        except BaseException:
            await engine.dispose()
            raise
        self._install(engine)
        self._loop = asyncio.get_running_loop()
        self.state = ManagerState.CONNECTED
        logger.info("Connected to %s", self.url)
        if self.settings.replicas:
            await self._start_replicas()
        return self

    # -- read replicas (the policy lives in _routing) ----------------------------------

    async def _start_replicas(self) -> None:
        settings = self.settings
        nodes: list[ReplicaNode] = []
        for index, url in enumerate(settings.replicas):
            engine = create_engine(settings.replace(url=url, replicas=()))
            node = ReplicaNode(
                f"replica{index + 1}",
                settings.masked_replicas[index],
                engine,
                option_engines(engine, self.backend, pgbouncer=settings.pgbouncer),
            )
            self._node_factories[node.name] = {
                kind: async_sessionmaker(
                    node.engines[kind],
                    info={STATE_KEY: SessionState(manager=self, read_only=True, node=node.name)},
                    expire_on_commit=False,
                    class_=ToolkitAsyncSession,
                )
                for kind in ("read_only", "autocommit")
            }
            nodes.append(node)
        router = Router(
            nodes,
            sticky_after_write=settings.sticky_after_write,
            max_lag=settings.max_replica_lag,
            check_interval=settings.replica_check_interval,
            probe_timeout=settings.connect_timeout,
        )
        self._router = router
        await router.probe_all()  # a replica that is down does not fail connect()
        router.start()
        self.metrics.add_section("routing", router.snapshot)

    @property
    def router(self) -> Router | None:
        """The read router when ``replicas`` are configured, else None."""
        return self._router

    async def read_session(
        self, route: Route = "auto", *, autocommit: bool = False
    ) -> ToolkitAsyncSession:
        """A session that only reads: on a replica when routing allows, else the primary.

        ``autocommit=True`` runs each statement on its own (standalone reads), otherwise
        the session runs read-only transactions. A replica that cannot be reached is
        marked down here and the next one (then the primary) is used, so the caller sees
        no error; the session's connection is checked out already in that case, which
        costs no extra round trip.
        """
        self._check_connected()
        check_route(route)
        kind = "autocommit" if autocommit else "read_only"
        router = self._router
        if router is not None and not self._sessions_bound:
            node = router.choose(route)
            while node is not None:
                session = self._node_factories[node.name][kind]()
                try:
                    await session.connection()
                except Exception as exc:
                    await session.close()
                    if isinstance(exc, sa_exc.TimeoutError):
                        raise translate(exc) from exc  # our pool is busy; the node is fine
                    router.failed(node, exc)
                    node = router.choose(route)
                    continue
                return session
        return self._factories[kind]()

    def read_failed(self, session: ToolkitAsyncSession, exc: BaseException) -> bool:
        """A read on ``session`` failed with ``exc``: True when it ran on a replica, which
        is then skipped with backoff (the caller may repeat the read elsewhere)."""
        state = find_session_state(session.sync_session)
        name = None if state is None else state.node
        router = self._router
        if name is None or router is None:
            return False
        for node in router.nodes:
            if node.name == name:
                router.failed(node, exc)
        return True

    def _count_attempt(self, attempt: int) -> None:
        self.connect_attempts = attempt

    def _install(self, engine: AsyncEngine) -> None:
        self._engine = engine
        views = option_engines(engine, self.backend, pgbouncer=self.settings.pgbouncer)
        self._engines = {"default": engine, **views}
        options: dict[str, Any] = {
            "expire_on_commit": False,
            "class_": ToolkitAsyncSession,
        }
        self._factories = {
            name: async_sessionmaker(
                bind,
                info={STATE_KEY: SessionState(manager=self, read_only=name == "read_only")},
                **options,
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
        router, self._router = self._router, None
        if router is not None:
            await router.stop()
            for node in router.nodes:
                await node.engine.dispose()
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

    def standalone_read_engine(self) -> AsyncEngine | None:
        """The engine a one-statement read outside any session may use directly (the
        autocommit view of the primary's pool), or None when reads must go through
        sessions: replicas route them, or :meth:`bind_sessions_to` holds them."""
        self._check_connected()
        if self._router is not None or self._sessions_bound:
            return None
        return self._engines["autocommit"]

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
        saved_bound, self._sessions_bound = self._sessions_bound, True
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
            self._sessions_bound = saved_bound

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
        return pool_figures(self._engine)

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
        primary = {
            "name": "primary",
            "role": "primary",
            "url": self.url,
            "healthy": error is None,
            "pool": self.pool_status(),
        }
        nodes = await node_health(self._router, timeout, primary)
        return HealthReport(
            healthy=error is None,
            latency_ms=round(latency, 3) if error is None else None,
            backend=self.backend,
            url=self.url,
            pool=self.pool_status(),
            metrics=self.metrics.snapshot(),
            error=error,
            nodes=nodes,
        )

    async def _ping(self) -> None:
        if self.state is ManagerState.CONNECTED:
            await ping(self._engines["autocommit"])
            return
        if self.state is ManagerState.DISPOSED:
            self._check_connected()
        await ping_new_engine(self.settings)


def _known(overrides: dict[str, Any]) -> dict[str, Any]:
    if "url" in overrides:
        msg = "Give the URL once: either as the first argument or as url=, not both."
        raise ConfigurationError(msg)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(DatabaseSettings)}
    if unknown:
        msg = f"Unknown setting(s): {', '.join(sorted(unknown))}. See DatabaseSettings fields."
        raise ConfigurationError(msg)
    return overrides
