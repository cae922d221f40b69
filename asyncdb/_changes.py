"""Which rows a transaction changed, published once it commits.

Every write path records here: the ORM flush hook (plain ORM changes and the
repository's single-row operations), ORM-enabled and Core DML run through a toolkit
session (``session.execute(update(User)...)``, recorded as "unknown rows of that model"),
and the repository's bulk and upsert operations, which record the exact keys they wrote.
When the outermost transaction commits, the set is handed to the listeners the
manager registered (the repository cache invalidates from it); a rollback discards
it. Nothing is published before the commit, so no other task can act on an
uncommitted change.

Two details matter for the cache's correctness:

* SQLAlchemy fires ``before_commit``/``after_commit`` for a SAVEPOINT release too;
  publishing there would invalidate before the real commit and then lose the changes,
  so only the outermost commit publishes.
* A COMMIT that raised has an unknown outcome (the server may have committed before
  the connection dropped): its changes are published anyway. Extra invalidation is
  harmless; a missed one would serve a stale row.

Text SQL (``text("UPDATE ...")``) is opaque and is not recorded.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import Table, event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from ._models import Base
from ._session import SessionState, ToolkitSession, session_state

__all__ = [
    "Changes",
    "add_commit_listener",
    "changed_in_transaction",
    "record_changes",
    "recorded_by_caller",
]

logger = logging.getLogger("asyncdb")

#: model → changed primary-key tuples, or None for "any row of this model".
Changes = dict[type[Any], set[tuple[Any, ...]] | None]
CommitListener = Callable[[Changes], None]

#: Per manager: who hears of its sessions' commits.
_LISTENERS: weakref.WeakKeyDictionary[Any, list[CommitListener]] = weakref.WeakKeyDictionary()


def record_changes(
    session: Session, model: type[Any], keys: Iterable[tuple[Any, ...]] | None
) -> None:
    """Note that rows of ``model`` (``keys``; None for unknown rows) changed in ``session``."""
    state = session_state(session)
    changes = state.changes
    if changes is None:
        changes = state.changes = {}
    if keys is None:
        changes[model] = None
        return
    if model in changes:
        current = changes[model]
        if current is not None:
            current.update(keys)
        return
    changes[model] = set(keys)


def changed_in_transaction(session: Session) -> Changes:
    """What the session's current transaction has changed so far (do not mutate)."""
    changes = session_state(session).changes
    return changes if changes is not None else {}


def add_commit_listener(manager: object, listener: CommitListener) -> None:
    """Call ``listener(changes)`` after each commit of a session of that manager.

    Also after a COMMIT that raised, whose outcome is unknown. A listener must not
    raise: the commit is done; a failing listener is logged.
    """
    _LISTENERS.setdefault(manager, []).append(listener)


@contextlib.contextmanager
def recorded_by_caller(session: Session) -> Iterator[None]:
    """DML run inside this block is recorded by its caller (with exact keys).

    The repository wraps its operations in it, so that its own ``UPDATE ...
    RETURNING`` does not also count as "unknown rows changed".
    """
    state = session_state(session)
    state.recorded_by_caller += 1
    try:
        yield
    finally:
        state.recorded_by_caller -= 1


@event.listens_for(ToolkitSession, "after_flush")
def _record_flush(session: Session, flush_context: Any) -> None:
    # Recorded whether or not a listener exists yet: the cache also asks what the
    # current transaction changed (to bypass itself), and may be attached mid-transaction.
    for group in (session.new, session.dirty, session.deleted):
        for obj in group:
            state = inspect(obj)
            record_changes(session, type(obj), [tuple(state.mapper.primary_key_from_instance(obj))])


@event.listens_for(ToolkitSession, "do_orm_execute")
def _record_dml(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete or state.is_insert):
        return
    if session_state(state.session).recorded_by_caller:
        return
    mapper = state.bind_mapper
    if mapper is not None:
        models: list[type[Any]] = [mapper.class_]
    else:
        models = _models_of(getattr(state.statement, "table", None))
    for model in models:
        record_changes(state.session, model, None)


def _models_of(table: Any) -> list[type[Any]]:
    if not isinstance(table, Table):
        return []
    return [m.class_ for m in Base.registry.mappers if table in m.tables]


def _is_outermost(session: Session) -> bool:
    # During a SAVEPOINT's commit the nested transaction is still the current one.
    return session.get_nested_transaction() is None


@event.listens_for(ToolkitSession, "before_commit")
def _mark_committing(session: Session) -> None:
    if _is_outermost(session):
        session_state(session).committing = True


@event.listens_for(ToolkitSession, "after_commit")
def _publish_committed(session: Session) -> None:
    if not _is_outermost(session):
        return
    state = session_state(session)
    state.committing = False
    changes, state.changes = state.changes, None
    _publish(state, changes)


@event.listens_for(ToolkitSession, "after_transaction_end")
def _discard(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    state = session_state(session)
    changes, state.changes = state.changes, None
    committing, state.committing = state.committing, False
    if committing:
        # The COMMIT (or the flush before it) raised: the outcome is unknown.
        _publish(state, changes)


def _publish(state: SessionState, changes: Changes | None) -> None:
    if not changes or state.manager is None:
        return
    for listener in _LISTENERS.get(state.manager, ()):
        try:
            listener(changes)
        except Exception:
            logger.exception("A commit listener failed; the commit itself succeeded")
