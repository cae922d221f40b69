"""AsyncUnitOfWork: one session, one transaction; nested units and savepoints."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction

from ._context import (
    AuditContext,
    current_unit,
    get_audit_context,
    owning_task,
    reset_audit_context,
    reset_current_unit,
    set_audit_context,
    set_current_unit,
)
from ._errors import TransactionError, ValidationError, translate_errors

if TYPE_CHECKING:
    import contextvars

    from ._manager import AsyncDatabaseManager
    from ._repository import Repository

__all__ = ["AsyncUnitOfWork", "UnitState"]

logger = logging.getLogger("asyncdb")

M = TypeVar("M")
Callback = Callable[[], "Awaitable[Any] | Any"]

ISOLATION_LEVELS = frozenset(
    {"SERIALIZABLE", "REPEATABLE READ", "READ COMMITTED", "READ UNCOMMITTED"}
)
#: Key in ``session.info`` pointing at the root unit that owns the session.
UNIT_KEY = "asyncdb_unit"


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

    Opened while another unit is active in the same task, a unit joins it as a
    SAVEPOINT. A unit belongs to the task that opened it: using it from any other
    task is a :class:`TransactionError` (open one unit per task instead).
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
        **extra: Any,
    ) -> None:
        if isolation_level is not None and isolation_level.upper() not in ISOLATION_LEVELS:
            allowed = ", ".join(sorted(ISOLATION_LEVELS))
            msg = f"isolation_level must be one of {allowed} (got {isolation_level!r})."
            raise ValidationError(msg)
        if db is None:
            from ._helpers import get_db_manager

            db = get_db_manager()
        self.db = db
        self.read_only = read_only
        self.isolation_level = isolation_level.upper() if isolation_level else None
        self.audit = AuditContext.of(user_id, session_id, correlation_id, extra)
        self.state = UnitState.NEW
        self._session: AsyncSession | None = None
        self._parent: AsyncUnitOfWork | None = None
        self._root: AsyncUnitOfWork = self
        self._savepoint: AsyncSessionTransaction | None = None
        self._owner: asyncio.Task[Any] | None = None
        self._unit_token: contextvars.Token[Any] | None = None
        self._audit_token: contextvars.Token[AuditContext] | None = None
        self._started = 0.0
        # Root only: callbacks per open savepoint level; [0] is the transaction itself.
        self._frames: list[list[Callback]] = []
        self._savepoint_depth = 0

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
        task = owning_task()
        if task is not self._owner:
            msg = (
                "This unit of work belongs to another task. A session cannot be shared "
                "between concurrent tasks: open a unit per task (`async with "
                "AsyncUnitOfWork(db)` inside the task)."
            )
            raise TransactionError(msg)

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> AsyncUnitOfWork:
        if self.state is not UnitState.NEW:
            msg = "A unit of work can be entered once. Create a new AsyncUnitOfWork."
            raise TransactionError(msg)
        self._owner = owning_task()
        outer = active_unit_for(self.db)
        if outer is not None:
            await self._join(outer)
        else:
            await self._begin()
        self.state = UnitState.ACTIVE
        self._unit_token = set_current_unit(self)
        self._audit_token = set_audit_context(self.effective_audit())
        return self

    async def _begin(self) -> None:
        session = self.db.session(read_only=self.read_only)
        session.info[UNIT_KEY] = self
        try:
            if self.isolation_level is not None and self.db.backend != "sqlite":
                # SQLite transactions are always serializable; nothing to set there.
                with translate_errors():
                    await session.connection(
                        execution_options={"isolation_level": self.isolation_level}
                    )
        except BaseException:
            await session.close()
            raise
        self._session = session
        self._frames = [[]]
        self._started = time.perf_counter()
        self.db.notify_transaction_begin()

    async def _join(self, outer: AsyncUnitOfWork) -> None:
        if outer._root.read_only and not self.read_only:
            msg = (
                "Cannot open a writing unit of work inside a read-only one. Open the "
                "outer unit without read_only=True."
            )
            raise TransactionError(msg)
        self._parent = outer
        self._root = outer._root
        self._session = outer.session
        with translate_errors():
            self._savepoint = await self._session.begin_nested()
        self._root._frames.append([])

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        try:
            if self.is_nested:
                await self._exit_nested(exc)
            else:
                await self._exit_root(exc)
        finally:
            self.state = UnitState.CLOSED
            if self._audit_token is not None:
                reset_audit_context(self._audit_token)
            if self._unit_token is not None:
                reset_current_unit(self._unit_token)

    async def _exit_nested(self, exc: BaseException | None) -> None:
        assert self._savepoint is not None
        frame = self._root._frames.pop()
        if exc is None:
            with translate_errors():
                await self._savepoint.commit()
            self._root._frames[-1].extend(frame)
        else:
            await _rollback_quietly(self._savepoint.rollback(), "savepoint")

    async def _exit_root(self, exc: BaseException | None) -> None:
        session = self._session
        assert session is not None
        try:
            if exc is None:
                with translate_errors():
                    await session.commit()
                self._end("commit")
                await self._run_callbacks()
            else:
                await self._abort(session, exc)
        finally:
            await _close_session(session)

    async def _abort(self, session: AsyncSession, exc: BaseException) -> None:
        self._frames = [[]]
        try:
            if isinstance(exc, asyncio.CancelledError):
                # The task is being cancelled: finish the rollback regardless.
                await asyncio.shield(session.rollback())
            else:
                await session.rollback()
        except BaseException as rollback_exc:  # the connection may be broken already
            logger.warning(
                "Rollback after %s failed (%s); the connection is discarded.",
                type(exc).__name__,
                type(rollback_exc).__name__,
            )
            with contextlib.suppress(Exception):
                await session.invalidate()
        finally:
            self._end("rollback")

    def _end(self, outcome: str) -> None:
        self.db.notify_transaction_end(outcome, time.perf_counter() - self._started)

    # -- explicit control ----------------------------------------------------------------

    async def commit(self) -> None:
        """Commit the work so far; later work runs in a new transaction.

        Only the outermost unit commits, and never inside a savepoint block.
        """
        self._check_usable()
        if self.is_nested or self._savepoint_depth:
            msg = (
                "Cannot commit inside a savepoint or a nested unit of work: the outer "
                "unit commits when its block ends. Leave the savepoint block first."
            )
            raise TransactionError(msg)
        assert self._session is not None
        with translate_errors():
            await self._session.commit()
        self._end("commit")
        await self._run_callbacks()
        self._started = time.perf_counter()
        self.db.notify_transaction_begin()

    async def rollback(self) -> None:
        """Undo the work so far (to the savepoint, for a nested unit); keep the unit open."""
        self._check_usable()
        if self.is_nested:
            assert self._savepoint is not None
            assert self._session is not None
            await self._savepoint.rollback()
            self._root._frames[-1].clear()
            with translate_errors():
                self._savepoint = await self._session.begin_nested()
            return
        if self._savepoint_depth:
            msg = (
                "Cannot roll back the whole unit inside a savepoint block; raise inside it instead."
            )
            raise TransactionError(msg)
        assert self._session is not None
        await self._session.rollback()
        self._end("rollback")
        self._frames = [[]]
        self._started = time.perf_counter()
        self.db.notify_transaction_begin()

    async def flush(self) -> None:
        """Send pending ORM changes to the database without committing."""
        self._check_usable()
        await self.session.flush()

    @contextlib.asynccontextmanager
    async def savepoint(self) -> AsyncIterator[AsyncUnitOfWork]:
        """A SAVEPOINT block: an exception inside undoes only the block, then propagates."""
        self._check_usable()
        session = self.session
        root = self._root
        with translate_errors():
            nested = await session.begin_nested()
        root._frames.append([])
        root._savepoint_depth += 1
        try:
            yield self
        except BaseException:
            root._frames.pop()
            await _rollback_quietly(nested.rollback(), "savepoint")
            raise
        else:
            frame = root._frames.pop()
            with translate_errors():
                await nested.commit()
            root._frames[-1].extend(frame)
        finally:
            root._savepoint_depth -= 1

    def on_commit(self, callback: Callback) -> None:
        """Run ``callback`` (sync or async) once, after the outermost commit succeeds.

        Dropped when the transaction (or the savepoint it was registered in) rolls
        back. A failing callback is logged; it cannot undo the commit.
        """
        self._check_usable()
        self._root._frames[-1].append(callback)

    async def _run_callbacks(self) -> None:
        callbacks = [cb for frame in self._frames for cb in frame]
        self._frames = [[]]
        for callback in callbacks:
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("An on_commit callback failed after a successful commit")

    # -- repositories --------------------------------------------------------------------

    def get_repository(self, model: type[M], **options: Any) -> Repository[M]:
        """A repository bound to this unit: it shares the session and the audit context."""
        from ._repository import Repository

        self._check_usable()
        return Repository(model, unit=self, **options)

    def __repr__(self) -> str:
        kind = "nested" if self.is_nested else "root"
        return f"<AsyncUnitOfWork {kind} state={self.state.value} db={self.db.url}>"


def active_unit_for(db: AsyncDatabaseManager) -> AsyncUnitOfWork | None:
    """The unit active in this task for ``db``, or None (a parent task's does not count)."""
    unit = current_unit()
    if not isinstance(unit, AsyncUnitOfWork) or unit.state is not UnitState.ACTIVE:
        return None
    if unit.db is not db or unit.owner_task is not owning_task():
        return None
    return unit


def inherited_unit_for(db: AsyncDatabaseManager) -> AsyncUnitOfWork | None:
    """An active unit for ``db`` that this task inherited from the task that created it."""
    unit = current_unit()
    if not isinstance(unit, AsyncUnitOfWork) or unit.state is not UnitState.ACTIVE:
        return None
    if unit.db is not db or unit.owner_task is owning_task():
        return None
    return unit


async def _rollback_quietly(awaitable: Awaitable[None], what: str) -> None:
    try:
        await awaitable
    except Exception as exc:
        logger.warning("Rolling back the %s failed (%s)", what, type(exc).__name__)


async def _close_session(session: AsyncSession) -> None:
    try:
        await asyncio.shield(session.close())
    except Exception as exc:
        logger.warning("Closing the session failed (%s)", type(exc).__name__)
