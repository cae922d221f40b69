"""The audit log's hash chain: how a row is linked, and how the links are checked.

**Scope: one chain per entity**, ``(table_name, entity_id)``. Rows of one entity are
numbered ``chain_seq`` = 1, 2, 3, … and each carries ``prev_hash`` (the previous row's
``row_hash``; NULL for the first) and ``row_hash`` =
sha256(``"<prev_hash or ''>:<chain_seq>:<content>"``), where ``<content>`` is the sha256 of
the canonical JSON (sorted keys, ``(",", ":")`` separators) of :data:`CHAIN_FIELDS`. The
split lets PostgreSQL and SQLite link a row inside its INSERT from a content digest computed here.

Why per entity: writers of *different* entities never wait for each other (no global or
sharded chain head to lock), and writers of the *same* entity are already serialised by the
row lock their UPDATE/DELETE takes on the entity itself, so the head they read is the
committed one. The unique index on ``(table_name, entity_id, chain_seq)`` turns any fork
the row lock did not prevent into an error instead of a silent branch.

The order that counts is ``chain_seq`` inside a chain (``id`` is a surrogate key). A row
changed, deleted, inserted or moved breaks the recomputed hash, the ``prev_hash`` link or
the run of ``chain_seq``. Retention cleanup removes a chain's oldest rows only as a prefix
and writes a CHECKPOINT row (itself chained, in the ``checkpoint`` chain of the audit table)
that records, per chain, the last removed ``chain_seq`` and its ``row_hash``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    true,
)
from sqlalchemy.sql.elements import TextClause

from ._audit_model import AUDIT_TABLE, AuditAction, AuditLog
from ._models import utcnow

__all__ = [
    "CHAIN_FIELDS",
    "CHECKPOINT_ENTITY",
    "canonical_json",
    "chain_key",
    "checkpoint_row",
    "content_digest",
    "fields_digest",
    "insert_linked",
    "link_digest",
    "link_rows",
    "prune_batch",
]

#: the columns a row's hash covers, besides ``prev_hash`` and ``chain_seq``
CHAIN_FIELDS = (
    "table_name",
    "entity_id",
    "action",
    "occurred_at",
    "user_id",
    "session_id",
    "correlation_id",
    "old_values",
    "new_values",
    "changed_fields",
    "extra",
)
#: entity id of the chain that holds retention checkpoints (table: the audit table itself)
CHECKPOINT_ENTITY = "checkpoint"
_HEAD_BATCH = 512


def _plain(value: Any) -> Any:
    """What ``json.dumps`` cannot write itself: datetimes as naive UTC, the rest as text."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds")
    return str(value)


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
)
# The C encoder ``_ENCODER.encode`` builds on every call, built once (the arguments are
# ``JSONEncoder.iterencode``'s; no circular-reference markers: audit values are
# ``json_safe`` copies, or JSON read back). Absent without the C accelerator.
_C_ENCODE = (
    None
    if c_make_encoder is None
    else c_make_encoder(None, _plain, encode_basestring, None, ":", ",", True, False, True)
)


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, ``(",", ":")`` separators, UTF-8 text.

    Datetimes are written as naive UTC ISO 8601 with microseconds. The values the audit
    log stores went through ``json_safe``, which also keeps numbers in a form every
    backend's JSON type gives back unchanged, so a row hashes the same before it is
    written and after it is read back. The text is ``json.dumps(value, sort_keys=True,
    separators=(",", ":"), ensure_ascii=False, default=...)``'s, computed without
    building an encoder per call.
    """
    if type(value) is str:
        return encode_basestring(value)
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def content_digest(row: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of a row's :data:`CHAIN_FIELDS`."""
    return fields_digest([row.get(name) for name in CHAIN_FIELDS])


def fields_digest(values: Sequence[Any]) -> str:
    """:func:`content_digest` from the values of :data:`CHAIN_FIELDS`, in that order."""
    content = dict(zip(CHAIN_FIELDS, values, strict=True))
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


def link_digest(prev_hash: str | None, chain_seq: int, content: str) -> str:
    """``row_hash``: sha256 (hex) of ``"<prev_hash or ''>:<chain_seq>:<content digest>"``.

    PostgreSQL computes the same expression inside the INSERT (see :func:`insert_linked`).
    """
    return hashlib.sha256(f"{prev_hash or ''}:{chain_seq}:{content}".encode()).hexdigest()


def chain_key(table_name: str, entity_id: str | None) -> tuple[str, str | None]:
    """The chain a row belongs to."""
    return (table_name, entity_id)


@functools.lru_cache(maxsize=16)
def _heads_query(count: int) -> TextClause:
    """The newest link of each of ``count`` chains of one table: one probe of the chain
    index per entity (newest ``chain_seq`` first), however long its chain."""
    wanted = ", ".join(f"(:e{i})" for i in range(count))
    return text(
        f"WITH wanted(entity_id) AS (VALUES {wanted}) "
        f"SELECT head.entity_id, head.chain_seq, head.row_hash "
        f"FROM wanted JOIN {AUDIT_TABLE} head ON head.id = ("
        f"SELECT newest.id FROM {AUDIT_TABLE} newest "
        f"WHERE newest.table_name = :table_name AND newest.entity_id = wanted.entity_id "
        f"AND newest.chain_seq IS NOT NULL ORDER BY newest.chain_seq DESC LIMIT 1)"
    )


def _heads_probing(conn: Connection, table_name: str, chunk: list[str]) -> Iterable[Sequence[Any]]:
    """:func:`_heads_query` for ``chunk``, its size rounded up to a power of two (so a
    few statement shapes serve every batch)."""
    size = 1 << (len(chunk) - 1).bit_length()
    padded = chunk + [chunk[0]] * (size - len(chunk))
    params: dict[str, Any] = {f"e{i}": e for i, e in enumerate(padded)}
    params["table_name"] = table_name
    return conn.execute(_heads_query(size), params)


def _heads_scanning(conn: Connection, table_name: str, chunk: list[str]) -> Iterable[Sequence[Any]]:
    """The same heads without a ``VALUES`` table, which MySQL writes ``VALUES ROW(...)``:
    every link of each chain is visited (time grows with the chains' length)."""
    audit: Table = AuditLog.__table__  # type: ignore[assignment]
    newer = audit.alias("newer")
    last = (
        select(func.max(newer.c.chain_seq))
        .where(newer.c.table_name == audit.c.table_name, newer.c.entity_id == audit.c.entity_id)
        .scalar_subquery()
    )
    stmt = select(audit.c.entity_id, audit.c.chain_seq, audit.c.row_hash).where(
        audit.c.table_name == table_name, audit.c.entity_id.in_(chunk), audit.c.chain_seq == last
    )
    return conn.execute(stmt)


def _heads(
    conn: Connection, table_name: str, entity_ids: Sequence[str]
) -> dict[str, tuple[int, str | None]]:
    """The newest ``(chain_seq, row_hash)`` of each entity's chain that exists: one
    query per 512 entities."""
    dialect = conn.dialect
    mysql = dialect.name == "mysql" and not getattr(dialect, "is_mariadb", False)
    query = _heads_scanning if mysql else _heads_probing
    heads: dict[str, tuple[int, str | None]] = {}
    for start in range(0, len(entity_ids), _HEAD_BATCH):
        for entity_id, seq, row_hash in query(
            conn, table_name, list(entity_ids[start : start + _HEAD_BATCH])
        ):
            heads[entity_id] = (int(seq), row_hash)
    return heads


def link_rows(
    conn: Connection, rows: Sequence[dict[str, Any]], contents: Sequence[str] | None = None
) -> None:
    """Fill ``chain_seq``, ``prev_hash`` and ``row_hash`` of ``rows`` (in place), in order.

    One query per table (and 512 entities) finds the chains' heads; several rows of one
    entity in ``rows`` follow each other in the order given. ``contents``: each row's
    :func:`content_digest`, when the caller has computed it already.
    """
    wanted: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row["entity_id"] is not None:
            wanted[row["table_name"]].add(row["entity_id"])
    heads: dict[tuple[str, str | None], tuple[int, str | None]] = {}
    for table_name, ids in wanted.items():
        for entity_id, head in _heads(conn, table_name, sorted(ids)).items():
            heads[(table_name, entity_id)] = head
    if any(row["entity_id"] is None for row in rows):
        # Rows without an entity id (none of asyncdb's paths writes one) chain per table.
        for table_name in {row["table_name"] for row in rows if row["entity_id"] is None}:
            stmt = (
                select(AuditLog.chain_seq, AuditLog.row_hash)
                .where(AuditLog.table_name == table_name, AuditLog.entity_id.is_(None))
                .where(AuditLog.chain_seq.is_not(None))
                .order_by(AuditLog.chain_seq.desc())
                .limit(1)
            )
            found = conn.execute(stmt).first()
            if found is not None:
                heads[(table_name, None)] = (int(found[0] or 0), found[1])
    for index, row in enumerate(rows):
        key = chain_key(row["table_name"], row["entity_id"])
        seq, prev = heads.get(key, (0, None))
        content = content_digest(row) if contents is None else contents[index]
        row["chain_seq"] = seq + 1
        row["prev_hash"] = prev
        row["row_hash"] = link_digest(prev, seq + 1, content)
        heads[key] = (seq + 1, row["row_hash"])


#: SQLite function (registered per connection) computing :func:`link_digest` in the INSERT
SQLITE_LINK_FUNCTION = "asyncdb_chain_link"


def _sqlite_link(prev_hash: str | None, chain_seq: int, content: str) -> str:
    return link_digest(prev_hash, int(chain_seq), content)


def _ensure_sqlite_link(conn: Connection) -> None:
    """Register :data:`SQLITE_LINK_FUNCTION` on the connection's DBAPI connection, once."""
    proxied = conn.connection
    if proxied.info.get(SQLITE_LINK_FUNCTION):
        return
    dbapi = proxied.dbapi_connection
    assert dbapi is not None
    dbapi.create_function(SQLITE_LINK_FUNCTION, 3, _sqlite_link, deterministic=True)
    proxied.info[SQLITE_LINK_FUNCTION] = True


def _linked_insert(audit: Table, dialect: str) -> Any:
    """INSERT ... SELECT that reads the chain's head and links the row in one statement.

    One round trip per batch, as an unchained INSERT: the head lookup is an index probe
    on ``ux_asyncdb_audit_log_chain`` inside the same statement. PostgreSQL computes the
    sha256 itself; SQLite calls :func:`link_digest` through :data:`SQLITE_LINK_FUNCTION`.
    """
    same_chain = (
        audit.c.table_name == bindparam("table_name"),
        audit.c.entity_id == bindparam("entity_id"),
        audit.c.chain_seq.is_not(None),
    )
    head = (
        select(audit.c.chain_seq.label("seq"), audit.c.row_hash.label("hash"))
        .where(*same_chain)
        .order_by(audit.c.chain_seq.desc())
        .limit(1)
        .subquery("head")
    )
    one = select(literal(1).label("one")).subquery("one")
    seq = func.coalesce(head.c.seq, 0) + 1
    prev = head.c.hash
    pg_link = func.encode(
        func.sha256(
            func.convert_to(
                func.concat(
                    func.coalesce(prev, ""),
                    ":",
                    cast(seq, Text),
                    ":",
                    cast(bindparam("content_hash"), Text),
                ),
                "UTF8",
            )
        ),
        "hex",
    )
    values: list[Any]
    if dialect == "postgresql":
        link = pg_link
        # Parameters in a SELECT list have no column to take a type from: cast each one.
        values = [
            cast(bindparam(name, type_=audit.c[name].type), audit.c[name].type)
            for name in CHAIN_FIELDS
        ]
    else:
        link = getattr(func, SQLITE_LINK_FUNCTION)(prev, seq, bindparam("content_hash"))
        values = [bindparam(name, type_=audit.c[name].type) for name in CHAIN_FIELDS]
    source = select(*values, seq, prev, link).select_from(one.outerjoin(head, true()))
    columns = [*CHAIN_FIELDS, "chain_seq", "prev_hash", "row_hash"]
    return insert(audit).from_select(columns, source)


def insert_linked(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ``rows`` into the audit log, each linked into its chain.

    PostgreSQL and SQLite link in the INSERT itself (:func:`_linked_insert`); elsewhere
    one query per table reads the heads first. (``write_audit_rows`` sends most batches
    through ``_audit_batch`` instead: PostgreSQL's as one statement, MariaDB's and SQLite's
    of 8 rows or more as tuples; this serves the rest, and retention's checkpoints.)
    """
    audit: Table = AuditLog.__table__  # type: ignore[assignment]
    statement = _LINKED_INSERTS.get(conn.dialect.name)
    if statement is not None and all(r["entity_id"] is not None for r in rows):
        if conn.dialect.name == "sqlite":
            _ensure_sqlite_link(conn)
        params = [
            {**{name: row[name] for name in CHAIN_FIELDS}, "content_hash": content_digest(row)}
            for row in rows
        ]
        conn.execute(statement, params)
        return
    link_rows(conn, rows)
    if conn.dialect.name == "duckdb" and len(rows) > 1:
        # One multi-row INSERT: DuckDB runs an executemany one statement per row
        # (MariaDB's driver already rewrites an executemany into one multi-row INSERT).
        conn.execute(insert(audit).values(list(rows)))
        return
    conn.execute(insert(audit), list(rows))


def checkpoint_row(
    removed: Mapping[tuple[str, str | None], tuple[int, str | None, int]],
    occurred_at: dt.datetime,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The CHECKPOINT row for one retention batch (not yet linked).

    ``removed`` maps each chain to (last removed ``chain_seq``, its ``row_hash``, count).
    """
    chains = [
        {"table": table, "entity_id": entity, "seq": seq, "hash": row_hash, "removed": count}
        for (table, entity), (seq, row_hash, count) in sorted(
            removed.items(), key=lambda item: (item[0][0], item[0][1] or "")
        )
    ]
    return {
        "table_name": AUDIT_TABLE,
        "entity_id": CHECKPOINT_ENTITY,
        "action": AuditAction.CHECKPOINT.value,
        "occurred_at": occurred_at,
        "user_id": None,
        "session_id": None,
        "correlation_id": None,
        "old_values": None,
        "new_values": {"chains": chains},
        "changed_fields": None,
        "extra": dict(extra) if extra else None,
    }


#: transaction-local setting that lets retention through the append-only trigger
RETENTION_SETTING = "asyncdb.audit_retention"


def _same_entity(audit: Table, entity_id: str | None) -> Any:
    return audit.c.entity_id.is_(None) if entity_id is None else audit.c.entity_id == entity_id


def prune_batch(conn: Connection, cutoff: dt.datetime, batch_size: int) -> int:
    """Remove up to ``batch_size`` audit rows older than ``cutoff``; returns how many.

    Chained rows go only as a prefix of their chain (a row's older links go with it), and
    one CHECKPOINT row records where each shortened chain now starts.
    """
    audit: Table = AuditLog.__table__  # type: ignore[assignment]
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT set_config(:name, 'on', true)"), {"name": RETENTION_SETTING})
    found = conn.execute(
        select(audit.c.id, audit.c.table_name, audit.c.entity_id, audit.c.chain_seq)
        .where(audit.c.occurred_at < cutoff, audit.c.action != AuditAction.CHECKPOINT.value)
        .order_by(audit.c.id)
        .limit(batch_size)
    ).all()
    if not found:
        return 0
    unchained = [row.id for row in found if row.chain_seq is None]
    last: dict[tuple[str, str | None], int] = {}
    counts: dict[tuple[str, str | None], int] = defaultdict(int)
    for row in found:
        if row.chain_seq is not None:
            key = chain_key(row.table_name, row.entity_id)
            last[key] = max(last.get(key, 0), int(row.chain_seq))
            counts[key] += 1
    if unchained:
        conn.execute(delete(audit).where(audit.c.id.in_(unchained)))
    if last:
        removed: dict[tuple[str, str | None], tuple[int, str | None, int]] = {}
        for (table_name, entity_id), seq in last.items():
            where = and_(audit.c.table_name == table_name, _same_entity(audit, entity_id))
            link = conn.execute(
                select(audit.c.row_hash).where(where, audit.c.chain_seq == seq)
            ).scalar_one()
            removed[(table_name, entity_id)] = (seq, link, counts[(table_name, entity_id)])
        keyed = [(t, e, s) for (t, e), (s, _, _) in removed.items() if e is not None]
        if keyed:
            conn.execute(
                delete(audit).where(
                    audit.c.table_name == bindparam("t"),
                    audit.c.entity_id == bindparam("e"),
                    audit.c.chain_seq <= bindparam("s"),
                ),
                [{"t": t, "e": e, "s": s} for t, e, s in keyed],
            )
        for (table_name, entity_id), (seq, _, _) in removed.items():
            if entity_id is None:
                conn.execute(
                    delete(audit).where(
                        audit.c.table_name == table_name,
                        audit.c.entity_id.is_(None),
                        audit.c.chain_seq <= seq,
                    )
                )
        checkpoint = checkpoint_row(removed, utcnow(), {"cutoff": cutoff.isoformat()})
        insert_linked(conn, [checkpoint])
    return len(found)


_LINKED_INSERTS = {
    dialect: _linked_insert(AuditLog.__table__, dialect)  # type: ignore[arg-type]
    for dialect in ("postgresql", "sqlite")
}
