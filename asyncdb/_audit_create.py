"""An audited create in one statement on PostgreSQL: the row and its audit row together.

``WITH ins AS (INSERT … RETURNING …), aud AS (INSERT INTO audit_log SELECT … FROM ins
LEFT JOIN LATERAL <chain head>) SELECT … FROM ins``: one round trip, so a standalone
create needs no BEGIN/COMMIT either (the statement commits itself, as the unaudited
create does).

The chain's content digest (``_audit_chain``) covers the entity id, which only the
database knows here. Everything else in the row is known before the statement, and an
integer renders the same in canonical JSON and as PostgreSQL ``int::text``; so the
canonical content is computed here with two markers where the id goes (``entity_id``
and ``new_values.<pk>``), split at the markers, and PostgreSQL hashes the pieces joined
around ``ins.id::text``: byte for byte the digest the multi-statement path computes (a
test holds the two paths' rows equal and runs the verifier over them).

Only models whose INSERT the client can describe fully take this path (:func:`eligible`):
a single integer key the database generates (and the caller did not give), no server
defaults, computed or identity columns besides it, no SQL-expression defaults, one
table, no version counter, no ``before_insert``/``after_insert`` mapper listeners.
Others keep the ORM flush, whose audit hook writes the row.
Concurrency: the chain head is read in the statement's snapshot, which is safe because
the key is new (from a sequence): no other writer can be extending that chain.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    Table,
    Text,
    bindparam,
    cast,
    func,
    insert,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from ._audit import audit_row
from ._audit_batch import JSON_FIELDS, content_text, field_texts
from ._audit_chain import CHAIN_FIELDS, canonical_json
from ._audit_model import AuditAction, AuditLog
from ._context import AuditContext
from ._model_info import ModelInfo

__all__ = ["create_audited", "eligible"]

_AUDIT: Table = AuditLog.__table__  # type: ignore[assignment]
# Markers no value can contain by accident: the id's places in the canonical content.
_TOKEN = uuid.uuid4().hex
_ID_TEXT = f"asyncdb-entity-id-{_TOKEN}"  # inside the quotes of "entity_id"
_ID_NUMBER = f"asyncdb-entity-pk-{_TOKEN}"  # a JSON string standing for the bare number


def eligible(info: ModelInfo) -> bool:
    """Whether ``info``'s model can be created with its audit row in one statement."""
    dispatch = info.mapper.dispatch
    if dispatch.before_insert or dispatch.after_insert:
        return False  # the application's mapper events run in the ORM flush only
    return _eligible_table(info)


@functools.cache
def _eligible_table(info: ModelInfo) -> bool:
    table = info.table
    if len(info.pk_columns) != 1 or len(info.mapper.tables) != 1:
        return False
    pk = info.pk_columns[0]
    if info.mapper.version_id_col is not None or table.autoincrement_column is not pk:
        return False
    if not isinstance(pk.type, Integer):
        return False
    for column in table.columns:
        if column is pk:
            continue
        if column.server_default is not None or column.computed is not None:
            return False
        if column.identity is not None:
            return False
        default: Any = column.default
        if default is not None and not (
            getattr(default, "is_scalar", False) or getattr(default, "is_callable", False)
        ):
            return False
    return True


def _template(row: Mapping[str, Any], texts: dict[str, str]) -> list[str] | None:
    """The canonical content split where the id goes (a list of pieces, joined by it)."""
    content = content_text(texts)
    quoted_number = f'"{_ID_NUMBER}"'
    pieces: list[str] = []
    rest = content
    while True:
        at_text = rest.find(_ID_TEXT)
        at_number = rest.find(quoted_number)
        found = [p for p in (at_text, at_number) if p >= 0]
        if not found:
            pieces.append(rest)
            break
        at = min(found)
        width = len(_ID_TEXT) if at == at_text else len(quoted_number)
        pieces.append(rest[:at])
        rest = rest[at + width :]
    expected = 1 + int(row["new_values"] is not None and _ID_NUMBER in row["new_values"].values())
    return pieces if len(pieces) == expected + 1 else None


@functools.cache
def _statement(info: ModelInfo, keys: tuple[str, ...], slots: int, id_in_new: bool) -> Any:
    table = info.table
    pk = info.pk_columns[0]
    ins = (
        insert(table)
        .values({key: bindparam(f"v_{key}", type_=table.c[key].type) for key in keys})
        .returning(*table.c)
        .cte("ins")
    )
    id_text = cast(ins.c[pk.name], Text)
    head = (
        select(_AUDIT.c.chain_seq.label("seq"), _AUDIT.c.row_hash.label("hash"))
        .where(
            _AUDIT.c.table_name == table.name,
            _AUDIT.c.entity_id == cast(ins.c[pk.name], String),
            _AUDIT.c.chain_seq.is_not(None),
        )
        .order_by(_AUDIT.c.chain_seq.desc())
        .limit(1)
        .lateral("head")
    )
    parts: list[Any] = []
    for slot in range(slots + 1):
        if slot:
            parts.append(id_text)
        parts.append(bindparam(f"piece_{slot}", type_=Text))
    content = func.encode(func.sha256(func.convert_to(func.concat(*parts), "UTF8")), "hex")
    seq = func.coalesce(head.c.seq, 0) + 1
    link = func.encode(
        func.sha256(
            func.convert_to(
                func.concat(func.coalesce(head.c.hash, ""), ":", cast(seq, Text), ":", content),
                "UTF8",
            )
        ),
        "hex",
    )
    values: list[Any] = []
    for name in CHAIN_FIELDS:
        if name == "entity_id":
            values.append(cast(ins.c[pk.name], String))
        elif name in JSON_FIELDS:
            value: Any = cast(bindparam(f"a_{name}", type_=Text), JSONB)
            if name == "new_values" and id_in_new:
                value = value.op("||")(func.jsonb_build_object(info.pk_names[0], ins.c[pk.name]))
            values.append(value)
        else:
            column_type = _AUDIT.c[name].type
            values.append(cast(bindparam(f"a_{name}", type_=column_type), column_type))
    source = select(*values, seq, head.c.hash, link).select_from(ins.outerjoin(head, true()))
    aud = insert(_AUDIT).from_select([*CHAIN_FIELDS, "chain_seq", "prev_hash", "row_hash"], source)
    core = select(*ins.c).add_cte(aud.cte("aud"))
    # Kept whole: a statement object reused keeps its memoized cache key (generating the
    # key of this CTE costs about as much as the rest of the call).
    return select(info.model).from_statement(core)


async def create_audited(
    session: AsyncSession, info: ModelInfo, values: dict[str, Any], context: AuditContext
) -> Any | None:
    """INSERT the row and its CREATE audit row in one statement; returns the instance,
    or None when the values do not allow it (the caller then takes the ORM path).

    ``values`` are the checked attribute values with the Python defaults filled in.
    """
    pk_name = info.pk_names[0]
    if values.get(pk_name) is not None:
        return None  # the caller chose the key: the ORM path
    values = {k: v for k, v in values.items() if k != pk_name}
    new = {**values, pk_name: _ID_NUMBER}
    row = audit_row(info.model, AuditAction.CREATE, _ID_TEXT, context, new=new, changed=new)
    texts = field_texts(row)
    pieces = _template(row, texts)
    if pieces is None:
        return None
    new_values = row["new_values"]
    id_in_new = new_values is not None and new_values.get(pk_name) == _ID_NUMBER
    params: dict[str, Any] = {f"piece_{i}": piece for i, piece in enumerate(pieces)}
    for name in CHAIN_FIELDS:
        if name == "entity_id":
            continue
        if name in JSON_FIELDS:
            value = row[name]
            if value is None:
                params[f"a_{name}"] = None
            elif name == "new_values" and id_in_new:
                params[f"a_{name}"] = canonical_json(
                    {k: v for k, v in value.items() if k != pk_name}
                )
            else:
                params[f"a_{name}"] = texts[name]  # canonical_json(value), made once
        else:
            params[f"a_{name}"] = row[name]
    columns = {info.attr_to_column[k].key: v for k, v in values.items()}
    keys = tuple(sorted(columns))
    params.update({f"v_{key}": value for key, value in columns.items()})
    stmt = _statement(info, keys, len(pieces) - 1, id_in_new)
    result = await session.execute(stmt, params)
    return result.scalars().one()
