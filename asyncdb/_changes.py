"""Which rows a transaction changed, published once it commits.

Every write path records here: the ORM flush hook (plain ORM changes and the
repository's single-row operations) and the repository's bulk and upsert operations.
When the outermost transaction commits, the set is handed to the listeners the
manager registered (the repository cache invalidates from it); a rollback discards
it. Nothing is published before the commit, so no other task can act on an
uncommitted change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, SessionTransaction

from ._session import ToolkitSession

__all__ = ["Changes", "add_commit_listener", "record_changes"]

#: model → changed primary-key tuples, or None for "any row of this model".
Changes = dict[type[Any], set[tuple[Any, ...]] | None]
CommitListener = Callable[[Changes], None]

_KEY = "asyncdb_changes"
_LISTENERS = "asyncdb_commit_listeners"


def record_changes(
    session: Session, model: type[Any], keys: Iterable[tuple[Any, ...]] | None
) -> None:
    """Note that rows of ``model`` (``keys``; None for unknown rows) changed in ``session``."""
    changes: Changes = session.info.setdefault(_KEY, {})
    if keys is None:
        changes[model] = None
        return
    current = changes.get(model, set())
    if model in changes and current is None:
        return
    assert current is not None
    current.update(keys)
    changes[model] = current


def add_commit_listener(manager_extensions: dict[str, Any], listener: CommitListener) -> None:
    """Call ``listener(changes)`` after each commit of a session of that manager."""
    manager_extensions.setdefault(_LISTENERS, []).append(listener)


@event.listens_for(ToolkitSession, "after_flush")
def _record_flush(session: Session, flush_context: Any) -> None:
    if _LISTENERS not in _extensions(session):
        return
    for group in (session.new, session.dirty, session.deleted):
        for obj in group:
            state = inspect(obj)
            record_changes(session, type(obj), [tuple(state.mapper.primary_key_from_instance(obj))])


@event.listens_for(ToolkitSession, "after_commit")
def _publish(session: Session) -> None:
    changes = session.info.pop(_KEY, None)
    if not changes:
        return
    for listener in _extensions(session).get(_LISTENERS, ()):
        listener(changes)


@event.listens_for(ToolkitSession, "after_transaction_end")
def _discard(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_KEY, None)


def _extensions(session: Session) -> dict[str, Any]:
    manager = session.info.get("asyncdb_manager")
    return manager.extensions if manager is not None else {}
