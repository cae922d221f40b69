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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlalchemy import Table, event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from ._models import Base
from ._session import ToolkitSession

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

_KEY = "asyncdb_changes"
_COMMITTING = "asyncdb_committing"
_RECORDED_BY_CALLER = "asyncdb_dml_recorded"
_LISTENERS = "asyncdb_commit_listeners"


def record_changes(
    session: Session, model: type[Any], keys: Iterable[tuple[Any, ...]] | None
) -> None:
    """Note that rows of ``model`` (``keys``; None for unknown rows) changed in ``session``."""
    changes: Changes = session.info.setdefault(_KEY, {})
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
    changes: Changes = session.info.get(_KEY, {})
    return changes


def add_commit_listener(manager_extensions: dict[str, Any], listener: CommitListener) -> None:
    """Call ``listener(changes)`` after each commit of a session of that manager.

    Also after a COMMIT that raised, whose outcome is unknown. A listener must not
    raise: the commit is done; a failing listener is logged.
    """
    manager_extensions.setdefault(_LISTENERS, []).append(listener)


@contextlib.contextmanager
def recorded_by_caller(session: Session) -> Iterator[None]:
    """DML run inside this block is recorded by its caller (with exact keys).

    The repository wraps its operations in it, so that its own ``UPDATE ...
    RETURNING`` does not also count as "unknown rows changed".
    """
    info = session.info
    info[_RECORDED_BY_CALLER] = info.get(_RECORDED_BY_CALLER, 0) + 1
    try:
        yield
    finally:
        info[_RECORDED_BY_CALLER] -= 1


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
    if state.session.info.get(_RECORDED_BY_CALLER):
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
        session.info[_COMMITTING] = True


@event.listens_for(ToolkitSession, "after_commit")
def _publish_committed(session: Session) -> None:
    if not _is_outermost(session):
        return
    session.info.pop(_COMMITTING, None)
    _publish(session, session.info.pop(_KEY, None))


@event.listens_for(ToolkitSession, "after_transaction_end")
def _discard(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None:
        return
    changes = session.info.pop(_KEY, None)
    if session.info.pop(_COMMITTING, False):
        # The COMMIT (or the flush before it) raised: the outcome is unknown.
        _publish(session, changes)


def _publish(session: Session, changes: Changes | None) -> None:
    if not changes:
        return
    for listener in _extensions(session).get(_LISTENERS, ()):
        try:
            listener(changes)
        except Exception:
            logger.exception("A commit listener failed; the commit itself succeeded")


def _extensions(session: Session) -> dict[str, Any]:
    manager = session.info.get("asyncdb_manager")
    return manager.extensions if manager is not None else {}
