"""Streaming the audit log out: :func:`iter_audit_logs` and :func:`export_audit_logs`.

Rows are read in ``id`` order, one keyset batch (``id > last``) per short read, so memory
stays flat however large the log is and no transaction stays open during the export.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TextIO

from sqlalchemy import Table, select

from ._audit import check_filters
from ._audit_model import AuditLog
from ._errors import ValidationError
from ._filters import check_int
from ._translate import translate_errors

if TYPE_CHECKING:
    from ._manager import AsyncDatabaseManager

__all__ = ["EXPORT_COLUMNS", "EXPORT_FORMATS", "export_audit_logs", "iter_audit_logs"]

#: the fields of an exported row, in CSV column order
EXPORT_COLUMNS = (
    "id",
    "occurred_at",
    "table_name",
    "entity_id",
    "action",
    "user_id",
    "session_id",
    "correlation_id",
    "old_values",
    "new_values",
    "changed_fields",
    "extra",
    "chain_seq",
    "prev_hash",
    "row_hash",
)
EXPORT_FORMATS = ("jsonl", "csv")
_JSON_COLUMNS = frozenset({"old_values", "new_values", "changed_fields", "extra"})


async def iter_audit_logs(
    db: AsyncDatabaseManager,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    table_name: str | None = None,
    user_id: object = None,
    batch_size: int = 1000,
) -> AsyncIterator[dict[str, Any]]:
    """Every matching audit row as a JSON-ready dict, oldest (lowest id) first.

    ``since`` is inclusive, ``until`` exclusive, as in :func:`get_audit_logs`. Memory use
    does not grow with the log::

        async for row in iter_audit_logs(db, table_name="users"):
            sink.write(row)
    """
    check_int("batch_size", batch_size, 1, 100_000)
    check_filters(since=since, until=until, table_name=table_name)
    audit: Table = AuditLog.__table__  # type: ignore[assignment]
    conditions = []
    if since is not None:
        conditions.append(audit.c.occurred_at >= since)
    if until is not None:
        conditions.append(audit.c.occurred_at < until)
    if table_name is not None:
        conditions.append(audit.c.table_name == table_name)
    if user_id is not None:
        conditions.append(audit.c.user_id == str(user_id))
    columns = [audit.c[name] for name in EXPORT_COLUMNS]
    last = None
    while True:
        stmt = select(*columns).where(*conditions).order_by(audit.c.id).limit(batch_size)
        if last is not None:
            stmt = stmt.where(audit.c.id > last)
        with translate_errors():
            async with db.autocommit_session() as session:
                batch = (await session.execute(stmt)).all()
        for row in batch:
            data = dict(row._mapping)
            data["occurred_at"] = data["occurred_at"].isoformat()
            yield data
        if len(batch) < batch_size:
            return
        last = batch[-1].id


async def export_audit_logs(
    db: AsyncDatabaseManager, out: TextIO, *, format: str = "jsonl", **filters: Any
) -> int:
    """Write the matching audit rows to ``out`` as JSON lines or CSV; returns the count.

    ``filters`` are those of :func:`iter_audit_logs`. In CSV the JSON columns hold JSON
    text::

        with open("audit.jsonl", "w") as f:
            await export_audit_logs(db, f, since=start_of_month)
    """
    if format not in EXPORT_FORMATS:
        msg = f"Unknown export format {format!r}. Use one of: {', '.join(EXPORT_FORMATS)}."
        raise ValidationError(msg)
    count = 0
    writer = csv.writer(out) if format == "csv" else None
    if writer is not None:
        writer.writerow(EXPORT_COLUMNS)
    async for row in iter_audit_logs(db, **filters):
        if writer is None:
            out.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
        else:
            writer.writerow(
                [
                    ""
                    if row[name] is None
                    else json.dumps(row[name], ensure_ascii=False)
                    if name in _JSON_COLUMNS
                    else row[name]
                    for name in EXPORT_COLUMNS
                ]
            )
        count += 1
    return count
