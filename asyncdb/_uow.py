"""AsyncUnitOfWork: one session, one transaction; nested units and savepoints.

Transaction boundaries (COMMIT, ROLLBACK, RELEASE/ROLLBACK TO SAVEPOINT, closing the
session) run to completion even when the task is cancelled meanwhile; the cancellation
is re-raised afterwards. A cancel that interrupted one of them half-way would make
SQLAlchemy discard the connection, and on SQLite ``:memory:`` that connection is the
database.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction

from ._capabilities import require
from ._completion import (
    Callback,
    commit_or_report,
    complete,
    end_then_close,
    quietly,
    run_callbacks,
)
from ._context import (
    AuditContext,
    acts_for,
    current_unit,
    get_audit_context,
    owning_task,
    prepare_write_marks,
    reset_audit_context,
    reset_current_unit,
    set_audit_context,
    set_current_unit,
)
from ._errors import (
    ConfigurationError,
    TransactionError,
)
from ._isolation import apply_isolation_level, check_isolation_level
from ._registry import get_db_manager
from ._routing import Route, check_route
from ._session import session_state

if TYPE_CHECKING:
    import contextvars

    from ._manager import AsyncDatabaseManager
    from ._repository import Repository

__all__ = ["AsyncUnitOfWork", "UnitState"]

logger = logging.getLogger("asyncdb")

M = TypeVar("M")

#: Builds the repositories :meth:`AsyncUnitOfWork.get_repository` hands out. The
#: repository module registers :class:`~asyncdb.Repository` here when it is imported,
#: so this module does not import the layer above it.
_repository_factory: Callable[..., Any] | None = None


def register_repository_factory(factory: Callable[..., Any]) -> None:
    """Install the class :meth:`AsyncUnitOfWork.get_repository` instantiates."""
    global _repository_factory
    _repository_factory = factory


class UnitState(enum.Enum):
    """NEW → ACTIVE → CLOSED (final)."""

    NEW = "new"
    ACTIVE = "active"
    CLOSED = "closed"


class AsyncUnitOfWork:
    """A transaction scope: commits on a clean exit, rolls back on an exception.

    ::

        async with AsyncUnitOfWork(db, user_id="42") as uow:
            users = uow.get_repository(User)
            await users.create(name="Ada")
            async with uow.savepoint():
                ...  # an exception here undoes only this block

    Opened while another unit of the same manager is active in the same task, a unit
    joins it as a SAVEPOINT. A unit belongs to the task that opened it: using it from
    any other task is a :class:`TransactionError` (open one unit per task instead).

    ``read_only=True`` starts read-only transactions and refuses ORM writes; such a
    unit ends with a rollback, as it has nothing to commit. ``isolation_level``
    (``"SERIALIZABLE"``, ``"REPEATABLE READ"``, ...) applies to every transaction the
    unit runs; SQLite transactions are always serializable and ignore it.

    With read replicas, a read-only unit runs on a replica unless this task wrote
    recently (docs/scaling.md); ``route="primary"`` keeps it on the primary and
    ``route="replica"`` sends it to a replica even right after a write. A unit that may
    write always runs on the primary.
    """

    def __init__(
        self,
        db: AsyncDatabaseManager | None = None,
        *,
        user_id: object = None,
        session_id: object = None,
        correlation_id: object = None,
        read_only: bool = False,
        isolation_level: str | None = None,
        route: Route = "auto",
        **extra: Any,
    ) -> None:
        check_route(route)
        if route == "replica" and not read_only:
            msg = (
                "Only a read-only unit of work can run on a replica. Pass read_only=True "
                "with route='replica', or drop route= for a unit that writes."
            )
            raise ConfigurationError(msg)
        if db is None:
            db = get_db_manager()
        self.db = db
        self.read_only = read_only
        self.route: Route = route
        self.isolation_level = check_isolation_level(isolation_level)
        self.audit = AuditContext.of(user_id, session_id, correlation_id, extra)
        self.state = UnitState.NEW
        self._session: AsyncSession | None = None
        self._parent: AsyncUnitOfWork | None = None
        self._root: AsyncUnitOfWork = self
        # The unit that was current when this one began (another manager's, or a parent
        # task's): lookups walk this chain, so an inner unit of another manager does not
        # hide this one.
        self._enclosing: AsyncUnitOfWork | None = None
        self._savepoint: AsyncSessionTransaction | None = None
        self._owner: asyncio.Task[Any] | None = None
        self._unit_token: contextvars.Token[Any] | None = None
        self._audit_token: contextvars.Token[AuditContext] | None = None
        self._started = 0.0
        # Root only: one list of on_commit callbacks per open scope, innermost last.
        # [0] is the transaction; each nested unit and savepoint block pushes one.
        self._scopes: list[list[Callback]] = []
        # This unit's index in its root's _scopes.
        self._depth = 0

    # -- properties --------------------------------------------------------------------

    @property
    def owner_task(self) -> asyncio.Task[Any] | None:
        """The task that opened this unit."""
        return self._owner

    @property
    def is_nested(self) -> bool:
        """True when this unit joined an outer one as a SAVEPOINT."""
        return self._parent is not None

    @property
    def session(self) -> AsyncSession:
        """The unit's ``AsyncSession`` (shared by nested units and repositories)."""
        self._check_usable()
        assert self._session is not None
        return self._session

    def effective_audit(self) -> AuditContext:
        """The audit context for changes made now: the active context, then this
        unit's arguments and its outer units' on top (the unit's arguments win)."""
        context = get_audit_context()
        chain: list[AsyncUnitOfWork] = []
        unit: AsyncUnitOfWork | None = self
        while unit is not None:
            chain.append(unit)
            unit = unit._parent
        for unit in reversed(chain):
            context = context.merged(unit.audit)
        return context

    def _check_usable(self) -> None:
        if self.state is UnitState.NEW:
            msg = (
                "The unit of work has not begun. "
                "Use it as `async with AsyncUnitOfWork(db) as uow:`."
            )
            raise TransactionError(msg)
        if self.state is UnitState.CLOSED:
            msg = (
                "The unit of work is closed. Open a new `async with AsyncUnitOfWork(db)` "
                "block for more work."
            )
            raise TransactionError(msg)
        if not acts_for(self._owner):
            msg = (
                "This unit of work belongs to another task. A session cannot be shared "
                "between concurrent tasks: open a unit per task (`async with "
                "AsyncUnitOfWork(db)` inside the task). To bound a call's time inside "
                "the unit, `asyncio.wait_for` and `asyncio.timeout` both work."
            )
            raise TransactionError(msg)

    def _inner_scope_open(self) -> bool:
        return len(self._root._scopes) - 1 != self._depth

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> AsyncUnitOfWork:
        if self.state is not UnitState.NEW:
            msg = "A unit of work can be entered once. Create a new AsyncUnitOfWork."
            raise TransactionError(msg)
        self._owner = owning_task()
        enclosing = current_unit()
        self._enclosing = enclosing if isinstance(enclosing, AsyncUnitOfWork) else None
        outer = active_unit_for(self.db)
        if outer is not None:
            await self._join(outer)
        else:
            read_only = self.read_only and self.route != "primary"
            if read_only and self.isolation_level is None and self.db.router is not None:
                self._begin(await self.db.read_session(self.route))
            else:
                self._begin()
        self.state = UnitState.ACTIVE
        self._unit_token = set_current_unit(self)
        self._audit_token = set_audit_context(self.effective_audit())
        return self

    def _begin(self, session: AsyncSession | None = None) -> None:
        if session is None:
            session = self.db.session(read_only=self.read_only)
        if self.isolation_level is not None:
            apply_isolation_level(self.db, session, self.isolation_level)
        session_state(session.sync_session).unit = self
        if not self.read_only and self.db.router is not None:
            prepare_write_marks()  # the COMMIT runs in a helper task (read-your-writes)
        self._session = session
        self._scopes = [[]]
        self._depth = 0
        self._transaction_began()

    async def _join(self, outer: AsyncUnitOfWork) -> None:
        root = outer._root
        if root.read_only and not self.read_only:
            msg = (
                "Cannot open a writing unit of work inside a read-only one. Open the "
                "outer unit without read_only=True."
            )
            raise TransactionError(msg)
        if self.isolation_level is not None and self.isolation_level != root.isolation_level:
            msg = (
                f"Cannot use isolation_level={self.isolation_level!r} in a nested unit of "
                "work: it joins the outer transaction, whose level is already set. Pass "
                "isolation_level to the outermost unit."
            )
            raise TransactionError(msg)
        session = outer.session
        require(self.db.backend, "savepoint")  # DuckDB: an error naming it, before any SQL
        self._savepoint = await session.begin_nested()
        self._parent = outer
        self._root = root
        self._session = session
        root._scopes.append([])
        self._depth = len(root._scopes) - 1
        session_state(session.sync_session).unit = self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        callbacks: list[Callback] = []
        cancelled = False
        try:
            if self.is_nested:
                cancelled = await self._exit_nested(exc)
            else:
                callbacks, cancelled = await self._exit_root(exc)
        finally:
            self.state = UnitState.CLOSED
            if self._audit_token is not None:
                reset_audit_context(self._audit_token)
            if self._unit_token is not None:
                reset_current_unit(self._unit_token)
        # After the unit is closed, so a callback that writes runs its own transaction.
        await run_callbacks(callbacks)
        if cancelled:
            raise asyncio.CancelledError

    async def _exit_nested(self, exc: BaseException | None) -> bool:
        assert self._savepoint is not None
        assert self._parent is not None
        assert self._session is not None
        root = self._root
        scope = root._scopes.pop()
        session_state(self._session.sync_session).unit = self._parent
        if exc is None:
            cancelled = await complete(self._savepoint.commit())
            root._scopes[-1].extend(scope)
            return cancelled
        return await complete(quietly(self._savepoint.rollback(), "roll back a savepoint"))

    async def _exit_root(self, exc: BaseException | None) -> tuple[list[Callback], bool]:
        """COMMIT (or ROLLBACK) and close, in one shielded task: a cancel cannot
        interrupt either half-way. True in the result if a cancel arrived meanwhile.

        The flush runs in this task like any statement of the block (so the pool and
        the slow-query log see the caller's stack). A read-only unit has nothing to
        commit and rolls back, which also undoes a raw SQL write that SQLite (it has no
        READ ONLY transactions) would have let through.
        """
        session = self._session
        assert session is not None
        outcome = "rollback"
        cancelled = False
        closed = False
        try:
            if exc is None:
                if not self.read_only:
                    await session.flush()
                cancelled = await complete(end_then_close(session, commit=not self.read_only))
                outcome = "commit"
            else:
                what = f"roll back after {type(exc).__name__}"
                cancelled = await complete(end_then_close(session, commit=False, quiet=what))
            closed = True
        finally:
            callbacks = self._take_callbacks() if outcome == "commit" else []
            self._scopes = []
            self._end(outcome)
            if not closed:
                # The flush or the COMMIT failed before or while closing: close now.
                closed_late = await complete(quietly(session.close(), "close the session"))
                cancelled = cancelled or closed_late
        return callbacks, cancelled

    async def _commit(self, session: AsyncSession) -> bool:
        """``uow.commit()``: flush, then COMMIT shielded from a cancel (True if one came)."""
        if self.read_only:
            return await complete(session.rollback())
        await session.flush()
        return await complete(commit_or_report(session))

    def _transaction_began(self) -> None:
        self._started = time.perf_counter()
        try:
            self.db.notify_transaction_begin()
        except Exception:
            logger.exception("A transaction observer failed on begin")

    def _end(self, outcome: str) -> None:
        # An observer is plugged-in code; its failure must not skip closing the session.
        try:
            self.db.notify_transaction_end(outcome, time.perf_counter() - self._started)
        except Exception:
            logger.exception("A transaction observer failed on %s", outcome)

    def _take_callbacks(self) -> list[Callback]:
        callbacks = [cb for scope in self._scopes for cb in scope]
        self._scopes = [[]]
        return callbacks

    # -- explicit control ----------------------------------------------------------------

    async def commit(self) -> None:
        """Commit the work so far; later work runs in a new transaction.

        Only the outermost unit commits, and never inside a savepoint block or a
        nested unit. ``on_commit`` callbacks registered so far run after the commit.
        """
        self._check_usable()
        if self.is_nested:
            msg = (
                "Cannot commit a nested unit of work or inside a savepoint: the outer unit "
                "commits when its block ends. Raise inside the block to undo its work."
            )
            raise TransactionError(msg)
        if self._inner_scope_open():
            msg = (
                "Cannot commit while a savepoint block or a nested unit of work is open "
                "inside this unit: the outer unit commits when its block ends. Leave that "
                "block first."
            )
            raise TransactionError(msg)
        assert self._session is not None
        cancelled = await self._commit(self._session)
        self._end("commit")
        callbacks = self._take_callbacks()
        self._transaction_began()
        token = set_current_unit(self._enclosing)
        try:
            await run_callbacks(callbacks)
        finally:
            reset_current_unit(token)
        if cancelled:
            raise asyncio.CancelledError

    async def rollback(self) -> None:
        """Undo the work so far (to the savepoint, for a nested unit); keep the unit open.

        ``on_commit`` callbacks registered in the undone work are dropped.
        """
        self._check_usable()
        if self._inner_scope_open():
            msg = (
                "Cannot roll back while a savepoint block or a nested unit of work is open "
                "inside this unit; raise inside that block to undo it instead."
            )
            raise TransactionError(msg)
        session = self._session
        assert session is not None
        if self.is_nested:
            cancelled = await complete(self._restart_savepoint(session))
            self._root._scopes[-1].clear()
            if cancelled:
                raise asyncio.CancelledError
            return
        cancelled = await complete(session.rollback())
        self._end("rollback")
        self._scopes = [[]]
        self._transaction_began()
        if cancelled:
            raise asyncio.CancelledError

    async def _restart_savepoint(self, session: AsyncSession) -> None:
        assert self._savepoint is not None
        await self._savepoint.rollback()
        self._savepoint = await session.begin_nested()

    async def flush(self) -> None:
        """Send pending ORM changes to the database without committing."""
        await self.session.flush()

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[AsyncUnitOfWork]:
        """A SAVEPOINT block: an exception inside undoes only the block, then propagates.

        ``on_commit`` callbacks registered inside are dropped when the block rolls back.
        """
        session = self.session
        root = self._root
        require(self.db.backend, "savepoint")  # DuckDB: an error naming it, before any SQL
        nested = await session.begin_nested()
        root._scopes.append([])
        try:
            yield self
        except BaseException as exc:
            root._scopes.pop()
            cancelled = await complete(quietly(nested.rollback(), "roll back a savepoint"))
            if cancelled:
                raise asyncio.CancelledError from exc
            raise
        scope = root._scopes.pop()
        cancelled = await complete(nested.commit())
        root._scopes[-1].extend(scope)
        if cancelled:
            raise asyncio.CancelledError

    def on_commit(self, callback: Callback) -> None:
        """Run ``callback`` (sync or async) once, after the outermost commit succeeds.

        Dropped when the transaction (or the savepoint it was registered in) rolls
        back. A failing callback is logged; it cannot undo the commit. Callbacks run
        outside the unit: a write they make is its own transaction.
        """
        self._check_usable()
        self._root._scopes[-1].append(callback)

    # -- repositories --------------------------------------------------------------------

    def get_repository(self, model: type[M], **options: Any) -> Repository[M]:
        """A repository bound to this unit: it shares the session and the audit context."""
        self._check_usable()
        assert _repository_factory is not None, "asyncdb._repository registers it on import"
        repository: Repository[M] = _repository_factory(model, unit=self, **options)
        return repository

    def __repr__(self) -> str:
        kind = "nested" if self.is_nested else "root"
        return f"<AsyncUnitOfWork {kind} state={self.state.value} db={self.db.url}>"


def _innermost_for(db: AsyncDatabaseManager) -> AsyncUnitOfWork | None:
    """The innermost active unit of ``db`` visible in this context (any task's)."""
    unit = current_unit()
    while isinstance(unit, AsyncUnitOfWork):
        if unit.db is db and unit.state is UnitState.ACTIVE:
            return unit
        unit = unit._enclosing
    return None


def active_unit_for(db: AsyncDatabaseManager) -> AsyncUnitOfWork | None:
    """The unit for ``db`` active in this task, or None (a parent task's does not count)."""
    unit = _innermost_for(db)
    return unit if unit is not None and acts_for(unit.owner_task) else None


def inherited_unit_for(db: AsyncDatabaseManager) -> AsyncUnitOfWork | None:
    """An active unit for ``db`` that this task inherited from the task that created it."""
    unit = _innermost_for(db)
    return unit if unit is not None and not acts_for(unit.owner_task) else None
