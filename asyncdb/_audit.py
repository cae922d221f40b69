"""The audit trail: who changed what and when, written in the same transaction.

Two paths feed it, both ending in :func:`write_audit_rows`:

* plain ORM changes flushed through a toolkit session (``obj.name = "x"; await
  uow.commit()``), and the repository's single-row operations, which are ORM
  changes too: the ``after_flush`` hook reads each instance's attribute history;
* the repository's bulk and upsert operations (Core DML), which build their rows
  themselves and write them in batches.

Who: the unit of work's arguments, over the active :func:`audit_context`, over the
repository's ``set_context`` defaults.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import enum
import json
import math
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, event, inspect, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.base import NO_VALUE

from ._audit_batch import SQLITE_BATCH_MIN, insert_batch_pg, insert_batch_tuples
from ._audit_chain import insert_linked, prune_batch
from ._audit_model import AuditAction, AuditLog
from ._context import EMPTY_CONTEXT, ActingUnit, AuditContext, get_audit_context
from ._errors import ValidationError
from ._filters import check_int
from ._model_info import model_info
from ._models import Audited, utcnow
from ._session import ToolkitSession, session_state
from ._translate import translate_errors

if TYPE_CHECKING:
    from ._manager import AsyncDatabaseManager

__all__ = [
    "check_filters",
    "cleanup_audit_logs",
    "get_audit_logs",
    "is_audited",
    "json_safe",
    "mark_instance",
    "write_audit_rows",
]

AUDIT_BATCH = 1000
_EXACT_FLOAT = 2.0**53
#: The longest retention ``cleanup_audit_logs`` accepts (about 1,000 years).
MAX_RETENTION_DAYS = 365_000
_NO_AUDIT = object()


def is_audited(model: type[Any]) -> bool:
    """True for models that opted in with the :class:`Audited` marker."""
    return isinstance(model, type) and issubclass(model, Audited)


def json_safe(value: Any) -> Any:
    """A JSON-serializable form of ``value``; never raises.

    datetime/date/time → ISO 8601, UUID → str, Decimal → str (no precision lost),
    Enum → its value, bytes → base64, containers recursively, anything else → str().
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        # PostgreSQL's JSONB reads numbers as decimals and writes big integral ones back
        # without an exponent (1e16 returns as 10000000000000000, an int) and -0.0 as 0:
        # store them in that form, so the audit chain hashes what comes back.
        if value.is_integer() and (abs(value) >= _EXACT_FLOAT or value == 0):
            return int(value) if value else 0.0
        return value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal)):
        return str(value)
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


#: Default cap on one audited value's JSON size (``__audit_max_value_bytes__`` overrides).
DEFAULT_AUDIT_MAX_VALUE_BYTES = 64 * 1024
#: The key of the marker that replaces a value too large for the audit log.
TRUNCATED_MARKER = "$asyncdb_truncated"


def _capped(value: Any, cap: int) -> Any:
    """``value`` (already JSON-safe), or a marker with its head when larger than ``cap``.

    The marker is ``{"$asyncdb_truncated": {"bytes": <original size>, "head": <prefix>}}``:
    the audit row still says the value changed and how large it was.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        if len(value) * 4 <= cap:  # cheap bound: at most 4 UTF-8 bytes per character
            return value
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= cap:
        return value
    head = text[: max(0, cap // 8)]
    return {TRUNCATED_MARKER: {"bytes": size, "head": head}}


def _audit_values(model: type[Any], values: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    excluded = excluded_columns(model)
    cap = int(getattr(model, "__audit_max_value_bytes__", DEFAULT_AUDIT_MAX_VALUE_BYTES))
    return {k: _capped(json_safe(v), cap) for k, v in values.items() if k not in excluded}


def excluded_columns(model: type[Any]) -> frozenset[str]:
    """Columns kept out of the audit log (``__audit_exclude__``)."""
    return model_info(model).audit_excluded


def entity_id_of(values: Sequence[Any]) -> str | None:
    """The primary key as a string: ``"7"``, or a JSON list for composite keys."""
    if not values or all(v is None for v in values):
        return None
    if len(values) == 1:
        return str(json_safe(values[0]))
    return json.dumps([json_safe(v) for v in values])


def audit_row(
    model: type[Any],
    action: AuditAction,
    entity_id: str | None,
    context: AuditContext,
    *,
    old: Mapping[str, Any] | None = None,
    new: Mapping[str, Any] | None = None,
    changed: Iterable[str] | None = None,
) -> dict[str, Any]:
    """One audit row as a dict for ``INSERT``; excluded columns are dropped.

    A value whose JSON form exceeds the model's ``__audit_max_value_bytes__`` (default
    64 KiB) is stored as a truncation marker with its size and head.
    """
    table: Table = model.__table__
    return {
        "table_name": table.name,
        "entity_id": entity_id,
        "action": action.value,
        "occurred_at": utcnow(),
        "user_id": context.user_id,
        "session_id": context.session_id,
        "correlation_id": context.correlation_id,
        "old_values": _audit_values(model, old),
        "new_values": _audit_values(model, new),
        "changed_fields": None if changed is None else sorted(changed),
        "extra": json_safe(dict(context.extra)) or None,
    }


def resolve_context(session: Session, defaults: AuditContext | None = None) -> AuditContext:
    """Who acts: repository defaults < active audit_context < the unit's arguments."""
    context = (defaults or EMPTY_CONTEXT).merged(get_audit_context())
    unit: ActingUnit | None = session_state(session).unit
    if unit is not None:
        context = context.merged(unit.effective_audit())
    return context


def mark_instance(
    session: Session, instance: object, defaults: AuditContext | None, audit: bool
) -> None:
    """Remember a repository's audit defaults (or its ``audit=False``) for ``instance``."""
    if not audit or defaults is not None:
        state = session_state(session)
        registry = state.audit_objects
        if registry is None:
            registry = state.audit_objects = weakref.WeakKeyDictionary()
        registry[instance] = defaults if audit else _NO_AUDIT


def write_audit_rows(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ``rows`` into the audit log on the session's connection, in batches.

    Each row is linked into its entity's hash chain (see ``_audit_chain``). A batch is
    one statement on PostgreSQL (``_audit_batch``), one executemany elsewhere: of plain
    INSERTs after one head query on MariaDB/MySQL, and on SQLite when it holds
    :data:`SQLITE_BATCH_MIN` rows or more, else of INSERTs that link themselves (one
    trip to the driver's thread).
    """
    if not rows:
        return
    conn = session.connection()
    dialect = conn.dialect.name
    batched = dialect == "postgresql" and all(r["entity_id"] is not None for r in rows)
    for start in range(0, len(rows), AUDIT_BATCH):
        if batched:
            insert_batch_pg(conn, rows[start : start + AUDIT_BATCH])
        elif dialect == "mysql" or (dialect == "sqlite" and len(rows) - start >= SQLITE_BATCH_MIN):
            insert_batch_tuples(conn, rows[start : start + AUDIT_BATCH])
        else:
            insert_linked(conn, rows[start : start + AUDIT_BATCH])


def _column_values(obj: Any) -> dict[str, Any]:
    state = inspect(obj)
    values: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        value = state.attrs[attr.key].loaded_value
        if value is not NO_VALUE:
            values[attr.key] = value
    return values


def _changes(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    state = inspect(obj)
    old: dict[str, Any] = {}
    new: dict[str, Any] = {}
    for attr in state.mapper.column_attrs:
        history = state.attrs[attr.key].history
        if not history.has_changes():
            continue
        before = history.deleted[0] if history.deleted else None
        after = history.added[0] if history.added else None
        if before == after and history.deleted:
            continue
        old[attr.key] = before
        new[attr.key] = after
    return old, new


def _update_action(old: Mapping[str, Any], new: Mapping[str, Any]) -> AuditAction:
    if "deleted_at" in new:
        if old.get("deleted_at") is None and new["deleted_at"] is not None:
            return AuditAction.SOFT_DELETE
        if old.get("deleted_at") is not None and new["deleted_at"] is None:
            return AuditAction.RESTORE
    return AuditAction.UPDATE


def _pk(obj: Any) -> str | None:
    state = inspect(obj)
    return entity_id_of(state.mapper.primary_key_from_instance(obj))


@event.listens_for(ToolkitSession, "after_flush")
def _audit_flush(session: Session, flush_context: Any) -> None:
    registry = session_state(session).audit_objects
    rows: list[dict[str, Any]] = []

    def context_for(obj: Any) -> AuditContext | None:
        marker = registry.get(obj) if registry is not None else None
        if marker is _NO_AUDIT:
            return None
        return resolve_context(session, marker)

    for obj in session.new:
        if is_audited(type(obj)) and (ctx := context_for(obj)) is not None:
            values = _column_values(obj)
            rows.append(
                audit_row(type(obj), AuditAction.CREATE, _pk(obj), ctx, new=values, changed=values)
            )
    for obj in session.dirty:
        if not is_audited(type(obj)) or not session.is_modified(obj, include_collections=False):
            continue
        old, new = _changes(obj)
        if not new or (ctx := context_for(obj)) is None:
            continue
        action = _update_action(old, new)
        rows.append(audit_row(type(obj), action, _pk(obj), ctx, old=old, new=new, changed=new))
    for obj in session.deleted:
        if is_audited(type(obj)) and (ctx := context_for(obj)) is not None:
            rows.append(
                audit_row(type(obj), AuditAction.DELETE, _pk(obj), ctx, old=_column_values(obj))
            )
    write_audit_rows(session, rows)


# -- reading and cleaning up -----------------------------------------------------------


def check_filters(
    *,
    since: object = None,
    until: object = None,
    table_name: object = None,
    correlation_id: object = None,
) -> None:
    """Raise :class:`ValidationError` unless the times are datetimes and the names strings."""
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and not isinstance(moment, dt.datetime):
            msg = (
                f"{name} must be a datetime (got a {type(moment).__name__}), for example "
                "datetime.now(timezone.utc) - timedelta(days=1)."
            )
            raise ValidationError(msg)
    for name, text in (("table_name", table_name), ("correlation_id", correlation_id)):
        if text is not None and not isinstance(text, str):
            msg = f"{name} must be a string (got a {type(text).__name__})."
            raise ValidationError(msg)


async def get_audit_logs(
    db: AsyncDatabaseManager,
    *,
    table_name: str | None = None,
    entity_id: object = None,
    user_id: object = None,
    correlation_id: str | None = None,
    action: AuditAction | str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditLog]:
    """Audit rows matching every given filter, newest first.

    ``entity_id`` and ``user_id`` may be given as ints or UUIDs; they are stored as text.
    """
    check_int("limit", limit, 1, 100_000)
    check_int("offset", offset, 0)
    check_filters(since=since, until=until, table_name=table_name, correlation_id=correlation_id)
    stmt = select(AuditLog)
    if table_name is not None:
        stmt = stmt.where(AuditLog.table_name == table_name)
    if entity_id is not None:
        stmt = stmt.where(AuditLog.entity_id == str(json_safe(entity_id)))
    if user_id is not None:
        stmt = stmt.where(AuditLog.user_id == str(user_id))
    if correlation_id is not None:
        stmt = stmt.where(AuditLog.correlation_id == correlation_id)
    if action is not None:
        try:
            value = AuditAction(action).value
        except ValueError as exc:
            allowed = ", ".join(a.value for a in AuditAction)
            msg = f"Unknown audit action {action!r}. Use one of: {allowed}."
            raise ValidationError(msg) from exc
        stmt = stmt.where(AuditLog.action == value)
    if since is not None:
        stmt = stmt.where(AuditLog.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(AuditLog.occurred_at < until)
    stmt = (
        stmt.order_by(AuditLog.occurred_at.desc(), AuditLog.id.desc()).limit(limit).offset(offset)
    )
    async with db.autocommit_session() as session:
        return list((await session.scalars(stmt)).all())


async def cleanup_audit_logs(
    db: AsyncDatabaseManager, *, retention_days: int, batch_size: int = 1000
) -> int:
    """Delete audit rows older than ``retention_days``, in batches; returns the count.

    Each batch is its own short transaction, so a large cleanup never holds locks long.
    A chain loses only its oldest rows, and each batch writes a CHECKPOINT row recording
    the last removed link of every chain it shortened, so ``verify_audit_chain`` still
    passes afterwards. CHECKPOINT rows themselves are kept.
    """
    if (
        isinstance(retention_days, bool)
        or not isinstance(retention_days, (int, float))
        or not math.isfinite(retention_days)
        or not 1 <= retention_days <= MAX_RETENTION_DAYS
    ):
        msg = (
            f"retention_days must be a number of days from 1 to {MAX_RETENTION_DAYS} "
            f"(got {retention_days!r}); audit rows are evidence."
        )
        raise ValidationError(msg)
    check_int("batch_size", batch_size, 1, 100_000)
    cutoff = utcnow() - dt.timedelta(days=retention_days)
    total = 0
    while True:
        async with db.session() as session:
            with translate_errors():
                deleted = await session.run_sync(
                    lambda s: prune_batch(s.connection(), cutoff, batch_size)
                )
                await session.commit()
        total += deleted
        if deleted < batch_size:
            return total
