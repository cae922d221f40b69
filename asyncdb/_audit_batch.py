"""Audit rows in as few statements as the chain allows.

What the audit writers share:

* :func:`field_texts` / :func:`content_text`: the canonical JSON of a row's
  :data:`~asyncdb._audit_chain.CHAIN_FIELDS`, built from one canonical text per field.
  Sorted keys and ``(",", ":")`` separators make the whole object the concatenation of
  ``"<key>":<field text>`` in key order, so the text of each JSON field is computed once
  and serves both the content digest and the parameter the row is stored from. The
  result is byte for byte :func:`~asyncdb._audit_chain.canonical_json` of the row's
  fields (a unit test holds the two together).
* :func:`insert_batch_tuples`: on MariaDB/MySQL, and on SQLite from
  :data:`SQLITE_BATCH_MIN` rows, a batch is linked here (the chains' heads from one
  query) and goes as one executemany of tuples, each JSON field as its canonical text:
  neither SQLAlchemy's per-row parameter machinery nor a JSON encoder runs again per
  row. No head can move between the query and the INSERT: on SQLite asyncdb's write
  transactions hold the one write lock from their ``BEGIN IMMEDIATE``; on MariaDB the
  audited change holds its entity's row lock, and READ COMMITTED reads the newest
  committed head. The unique chain index refuses any fork regardless.
* :func:`insert_batch_pg`: one INSERT per batch on PostgreSQL. The rows travel as one
  array per column (``unnest``), each row's chain head is an index probe in a LATERAL
  subquery, and the server computes ``row_hash`` from the content digest computed here
  (the same expression as ``_audit_chain._linked_insert``). A statement does not see
  its own rows, so rows of one chain go in successive statements ("waves"): a flush or
  a bulk batch touches each entity once, which is one statement.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, text

from ._audit_chain import CHAIN_FIELDS, canonical_json, chain_key, link_rows
from ._audit_model import AUDIT_TABLE, AuditLog

__all__ = [
    "JSON_FIELDS",
    "SQLITE_BATCH_MIN",
    "content_hash",
    "content_text",
    "field_texts",
    "insert_batch_pg",
    "insert_batch_tuples",
    "waves",
]

#: the audit columns stored as JSON (their parameter is the canonical text, cast)
JSON_FIELDS = frozenset({"old_values", "new_values", "changed_fields", "extra"})
_SORTED = tuple(sorted(CHAIN_FIELDS))
_PREFIXES = tuple(f'"{name}":' for name in _SORTED)
_UTC = dt.timezone.utc


def _moment_text(value: Any) -> str:
    """``canonical_json`` of ``occurred_at`` without going through the encoder."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_UTC).replace(tzinfo=None)
        return f'"{value.isoformat(timespec="microseconds")}"'
    return canonical_json(value)


def field_texts(row: Mapping[str, Any]) -> dict[str, str]:
    """The canonical JSON text of each of the row's chain fields."""
    texts: dict[str, str] = {}
    for name in CHAIN_FIELDS:
        value = row.get(name)
        if value is None:
            texts[name] = "null"
        elif name == "occurred_at":
            texts[name] = _moment_text(value)
        else:
            texts[name] = canonical_json(value)
    return texts


def content_text(texts: Mapping[str, str]) -> str:
    """``canonical_json`` of the row's chain fields, from :func:`field_texts`."""
    return "{" + ",".join(p + texts[n] for p, n in zip(_PREFIXES, _SORTED, strict=True)) + "}"


def content_hash(texts: Mapping[str, str]) -> str:
    """The content digest (``_audit_chain.content_digest``) from :func:`field_texts`."""
    return hashlib.sha256(content_text(texts).encode("utf-8")).hexdigest()


def waves(rows: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """``rows`` split so that no chain appears twice in one part, order kept per chain."""
    pending = list(rows)
    while pending:
        seen: set[tuple[str, str | None]] = set()
        wave: list[dict[str, Any]] = []
        later: list[dict[str, Any]] = []
        for row in pending:
            key = chain_key(row["table_name"], row["entity_id"])
            if key in seen:
                later.append(row)
            else:
                seen.add(key)
                wave.append(row)
        yield wave
        pending = later


_PLAIN_FIELDS = ("table_name", "entity_id", "action", "user_id", "session_id", "correlation_id")

_PG_BATCH = text(
    f"""
INSERT INTO {AUDIT_TABLE} (table_name, entity_id, action, occurred_at, user_id, session_id,
    correlation_id, old_values, new_values, changed_fields, extra,
    chain_seq, prev_hash, row_hash)
SELECT v.table_name, v.entity_id, v.action, v.occurred_at, v.user_id, v.session_id,
    v.correlation_id, v.old_values::jsonb, v.new_values::jsonb, v.changed_fields::jsonb,
    v.extra::jsonb,
    coalesce(h.seq, 0) + 1, h.hash,
    encode(sha256(convert_to(concat(coalesce(h.hash, ''), ':',
        CAST(coalesce(h.seq, 0) + 1 AS TEXT), ':', v.content_hash), 'UTF8')), 'hex')
FROM unnest(CAST(:table_name AS VARCHAR[]), CAST(:entity_id AS VARCHAR[]),
    CAST(:action AS VARCHAR[]), CAST(:occurred_at AS TIMESTAMPTZ[]),
    CAST(:user_id AS VARCHAR[]), CAST(:session_id AS VARCHAR[]),
    CAST(:correlation_id AS VARCHAR[]), CAST(:old_values AS TEXT[]),
    CAST(:new_values AS TEXT[]), CAST(:changed_fields AS TEXT[]), CAST(:extra AS TEXT[]),
    CAST(:content_hash AS TEXT[]))
    WITH ORDINALITY AS v(table_name, entity_id, action, occurred_at, user_id, session_id,
        correlation_id, old_values, new_values, changed_fields, extra, content_hash, ord)
LEFT JOIN LATERAL (
    SELECT a.chain_seq AS seq, a.row_hash AS hash FROM {AUDIT_TABLE} AS a
    WHERE a.table_name = v.table_name AND a.entity_id = v.entity_id
        AND a.chain_seq IS NOT NULL
    ORDER BY a.chain_seq DESC LIMIT 1
) AS h ON true
ORDER BY v.ord
"""
)


def _aware(value: Any) -> Any:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=_UTC)
    return value


def _json_params(row: Mapping[str, Any], texts: Mapping[str, str]) -> dict[str, str | None]:
    """The parameter each JSON field is stored from: its canonical text, or None (SQL
    NULL, as the columns' ``none_as_null`` stores it)."""
    return {name: None if row.get(name) is None else texts[name] for name in JSON_FIELDS}


def insert_batch_pg(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ``rows`` (each with an ``entity_id``) linked into their chains: one
    statement per wave, one wave unless a chain appears twice in ``rows``."""
    for wave in waves(rows):
        columns: dict[str, list[Any]] = {name: [] for name in (*CHAIN_FIELDS, "content_hash")}
        for row in wave:
            texts = field_texts(row)
            for name in _PLAIN_FIELDS:
                columns[name].append(row.get(name))
            columns["occurred_at"].append(_aware(row["occurred_at"]))
            for name, param in _json_params(row, texts).items():
                columns[name].append(param)
            columns["content_hash"].append(content_hash(texts))
        conn.execute(_PG_BATCH, columns)


#: From this many rows, an audit batch on SQLite reads its chains' heads in one query
#: and sends plain INSERTs: about 10% faster at 16 rows, 20% at 64 (the self-linking
#: ``INSERT ... SELECT`` costs SQLite 2x a plain INSERT per row), while one or a few rows
#: are faster in the single trip of the self-linking form.
SQLITE_BATCH_MIN = 8

_LINKED_FIELDS = (*CHAIN_FIELDS, "chain_seq", "prev_hash", "row_hash")
#: the INSERT of :func:`insert_batch_tuples`, per DBAPI parameter style
_TUPLES_INSERT = {
    style: f"INSERT INTO {AUDIT_TABLE} ({', '.join(_LINKED_FIELDS)}) "
    f"VALUES ({', '.join(marker for _ in _LINKED_FIELDS)})"
    for style, marker in (("qmark", "?"), ("format", "%s"))
}


def insert_batch_tuples(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT ``rows`` into the audit log (SQLite, MariaDB/MySQL), each linked into its
    chain (in place, as ``_audit_chain.link_rows`` does): one head query per 512
    entities, then one executemany of tuples. A JSON field is stored as the canonical
    text its digest covers (SQL NULL for None, as the column's ``none_as_null`` would)."""
    texts = [field_texts(row) for row in rows]
    link_rows(conn, rows, [content_hash(t) for t in texts])
    dialect = conn.dialect
    moment = AuditLog.__table__.c.occurred_at.type
    to_moment = moment.dialect_impl(dialect).bind_processor(dialect)
    assert to_moment is not None  # UTCDateTime: naive UTC

    def stored(row: dict[str, Any], text_of: Mapping[str, str]) -> tuple[Any, ...]:
        values = {**row, **_json_params(row, text_of), "occurred_at": to_moment(row["occurred_at"])}
        return tuple(values.get(name) for name in _LINKED_FIELDS)

    records = [stored(row, text_of) for row, text_of in zip(rows, texts, strict=True)]
    conn.exec_driver_sql(_TUPLES_INSERT[dialect.paramstyle], records)
