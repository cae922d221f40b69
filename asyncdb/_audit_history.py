"""Reading an entity's past from the audit trail: :func:`history`, :func:`as_of`, :func:`revert`.

The trail of one entity is its hash chain, in ``chain_seq`` order (rows written before the
chain existed come first, by time). Replaying it gives the entity's values after each
change: a CREATE (or an UPSERT that inserted) sets them, an UPDATE, SOFT_DELETE, RESTORE
or UPSERT that updated merges its new values in, a hard DELETE ends the entity (``None``).
Columns kept out of the log (``__audit_exclude__``) are never reconstructed; a value the
log stored as a truncation marker (larger than the model's audit cap) stays a marker.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import Enum as SAEnum
from sqlalchemy import select

from ._audit import TRUNCATED_MARKER, entity_id_of
from ._audit_model import AuditAction, AuditLog
from ._context import audit_context
from ._errors import NotFoundError, ValidationError
from ._manager import AsyncDatabaseManager
from ._model_info import model_info
from ._models import utcnow
from ._registry import _connected, get_db_manager
from ._repository import Repository
from ._uow import AsyncUnitOfWork

__all__ = ["AuditVersion", "as_of", "history", "revert"]

T = TypeVar("T")

_ENDS = frozenset({AuditAction.DELETE.value})
_SETS = frozenset({AuditAction.CREATE.value, AuditAction.BULK_CREATE.value})


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditVersion:
    """One version of an entity: the change that made it, who, when, and the result.

    ``values`` is the entity after this change as stored in the log (JSON-safe values;
    ``None`` after a hard delete); ``old_values``/``new_values`` are the change itself.
    """

    audit_id: int
    version: int
    action: str
    occurred_at: dt.datetime
    user_id: str | None
    session_id: str | None
    correlation_id: str | None
    changed_fields: list[str]
    old_values: dict[str, Any] | None
    new_values: dict[str, Any] | None
    values: dict[str, Any] | None
    extra: dict[str, Any] | None


def _apply(state: dict[str, Any] | None, row: AuditLog) -> dict[str, Any] | None:
    new = dict(row.new_values or {})
    if row.action in _ENDS or (row.action == AuditAction.BULK_DELETE.value and not new):
        return None
    if row.action in _SETS or (row.action == AuditAction.UPSERT.value and row.old_values is None):
        return new
    return {**(state or {}), **new}


def _order(row: AuditLog) -> tuple[int, Any, int]:
    if row.chain_seq is None:
        return (0, row.occurred_at, row.id)
    return (1, row.chain_seq, row.id)


async def _rows(db: AsyncDatabaseManager | None, model: type[Any], id: Any) -> list[AuditLog]:
    manager = await _connected(db if db is not None else get_db_manager())
    stmt = select(AuditLog).where(
        AuditLog.table_name == model.__table__.name,
        AuditLog.entity_id == entity_id_of(_key(id)),
    )
    async with manager.autocommit_session() as session:
        rows = list((await session.scalars(stmt)).all())
    return sorted(rows, key=_order)


async def history(
    model: type[Any], id: Any, *, db: AsyncDatabaseManager | None = None
) -> list[AuditVersion]:
    """The versions of one entity, oldest first: who changed what, when, and the result::

        for v in await history(Item, 7):
            print(v.version, v.action, v.user_id, v.occurred_at, v.changed_fields)

    ``db`` defaults to the process-wide manager.
    """
    versions: list[AuditVersion] = []
    state: dict[str, Any] | None = None
    for number, row in enumerate(await _rows(db, model, id), start=1):
        state = _apply(state, row)
        versions.append(
            AuditVersion(
                audit_id=row.id,
                version=number,
                action=row.action,
                occurred_at=row.occurred_at,
                user_id=row.user_id,
                session_id=row.session_id,
                correlation_id=row.correlation_id,
                changed_fields=list(row.changed_fields or []),
                old_values=row.old_values,
                new_values=row.new_values,
                values=None if state is None else dict(state),
                extra=row.extra,
            )
        )
    return versions


def _is_truncated(value: Any) -> bool:
    """True for the marker the log stores instead of a value larger than its cap."""
    return isinstance(value, dict) and set(value) == {TRUNCATED_MARKER}


def _decode(model: type[Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The log's JSON-safe values turned back into the model's Python types.

    A truncation marker is kept as it is: the log holds only the value's head.
    """
    column_types = model_info(model).column_types
    decoded: dict[str, Any] = {}
    for key, value in values.items():
        column_type = column_types.get(key)
        if column_type is None or value is None or _is_truncated(value):
            decoded[key] = value
            continue
        try:
            if isinstance(column_type, SAEnum) and column_type.enum_class is not None:
                decoded[key] = column_type.enum_class(value)
                continue
            # A TypeDecorator (such as UTCDateTime) reads as its underlying type.
            python_type = getattr(column_type, "impl_instance", column_type).python_type
        except (NotImplementedError, ValueError):
            decoded[key] = value
            continue
        decoded[key] = _to_python(python_type, value)
    return decoded


def _to_python(python_type: type[Any], value: Any) -> Any:
    if isinstance(value, python_type):
        return value
    if python_type is dt.datetime:
        parsed = dt.datetime.fromisoformat(value)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
    if python_type in (dt.date, dt.time):
        return python_type.fromisoformat(value)
    if python_type in (decimal.Decimal, uuid.UUID, float, int):
        return python_type(value)
    if python_type is bytes:
        return base64.b64decode(value)
    if issubclass(python_type, enum.Enum):
        return python_type(value)
    return value


async def as_of(
    model: type[Any], id: Any, *, at: dt.datetime, db: AsyncDatabaseManager | None = None
) -> dict[str, Any] | None:
    """The entity's column values at ``at``, rebuilt from the audit trail.

    ``None`` when it did not exist then (not yet created, or hard-deleted); a soft-deleted
    entity exists, with ``deleted_at`` set. A naive ``at`` is taken to be UTC::

        before = await as_of(Item, 7, at=datetime(2026, 1, 1, tzinfo=UTC))
    """
    if not isinstance(at, dt.datetime):
        msg = f"as_of() needs a datetime for at= (got {type(at).__name__}); pass one in UTC."
        raise ValidationError(msg)
    moment = at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)
    state: dict[str, Any] | None = None
    for row in await _rows(db, model, id):
        if row.occurred_at > moment:
            break
        state = _apply(state, row)
    return None if state is None else _decode(model, state)


async def revert(
    model: type[T], id: Any, *, to: int | dt.datetime, db: AsyncDatabaseManager | None = None
) -> T:
    """Write back the entity's values as they were after audit row ``to`` (or at time ``to``).

    The write is a normal audited repository write (an update; a restore first if the
    entity is soft-deleted now; a create if it was hard-deleted), and its audit rows carry
    ``extra["revert"] = {"to_audit_id": …, "to": …}``. Columns with an ``onupdate`` (such
    as ``updated_at``) and the primary key are left to the database::

        await revert(Item, 7, to=1234)   # as after audit row 1234
    """
    manager = await _connected(db if db is not None else get_db_manager())
    rows = await _rows(manager, model, id)
    state: dict[str, Any] | None = None
    target: AuditLog | None = None
    for row in rows:
        if isinstance(to, dt.datetime):
            moment = to if to.tzinfo else to.replace(tzinfo=dt.timezone.utc)
            if row.occurred_at > moment:
                break
        state = _apply(state, row)
        target = row
        if not isinstance(to, dt.datetime) and row.id == to:
            break
    else:
        if not isinstance(to, dt.datetime):
            msg = (
                f"Audit row {to!r} is not in the trail of {model.__name__} {id!r}. "
                "Pick an audit id from history() of this entity, or pass a datetime."
            )
            raise NotFoundError(msg)
    if state is None or target is None:
        msg = (
            f"{model.__name__} {id!r} did not exist at that point of its audit trail, so "
            "there is nothing to revert to. Delete it instead, or pick a later point."
        )
        raise ValidationError(msg)
    info = model_info(model)
    keep_out = info.audit_excluded | set(info.pk_names)
    keep_out |= {k for k, column in info.attr_to_column.items() if column.onupdate is not None}
    values = {k: v for k, v in _decode(model, state).items() if k not in keep_out}
    truncated = sorted(k for k, v in values.items() if _is_truncated(v))
    if truncated:
        msg = (
            f"The audit log kept only the head of {', '.join(truncated)} of "
            f"{model.__name__} {id!r} at that point (the value was larger than the audit "
            "cap, __audit_max_value_bytes__), so revert cannot restore it. Write those "
            "values yourself with an update, or pick another point."
        )
        raise ValidationError(msg)
    marker = {
        "to_audit_id": target.id,
        "to": to.isoformat() if isinstance(to, dt.datetime) else to,
        "at": utcnow().isoformat(),
    }
    with audit_context(revert=marker):
        async with AsyncUnitOfWork(manager) as uow:
            repo: Repository[T] = uow.get_repository(model)
            current = await repo.get_by_id(id, with_deleted=True)
            if current is None:
                pk = dict(zip(info.pk_names, _key(id), strict=True))
                return await repo.create(**pk, **values)
            if getattr(current, "deleted_at", None) is not None:
                # update() refuses soft-deleted rows: restore, then set deleted_at again
                # below if the target has it.
                current = await repo.restore(id)
            changed = {k: v for k, v in values.items() if getattr(current, k, None) != v}
            if not changed:
                return current
            return await repo.update(id, **changed)


def _key(id: Any) -> tuple[Any, ...]:
    return tuple(id) if isinstance(id, (tuple, list)) else (id,)
