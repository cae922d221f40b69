"""bulk_upsert on PostgreSQL: one ``INSERT … SELECT FROM unnest(…) ON CONFLICT`` per batch.

The multi-row ``INSERT … VALUES (…), (…) ON CONFLICT`` that SQLAlchemy's executemany
builds sends one parameter per value, and the server parses and plans a statement of up
to 32,767 parameters per chunk. Here each column travels as one array parameter and the
rows come out of ``unnest`` (as the audit log's batches do, :mod:`._audit_batch`): one
statement per batch, whatever its size, that the server plans once. The rows, their
defaults, the conflict target and the ``SET`` clause are the multi-row form's; so is the
outcome, row for row.

Only columns whose values an array parameter carries unchanged take this path: numbers,
text, booleans, dates and times, UUIDs and bytes, or a ``TypeDecorator`` over one of
them (its ``process_bind_param`` runs on each element). A batch naming another type (JSON,
an enum, an array) goes as multi-row VALUES. A batch the server refuses is rolled back to
its SAVEPOINT and replayed through the multi-row path, which names the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, bindparam, func, select, types
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

__all__ = ["can_unnest", "unnest_params", "unnest_source"]

#: The generic types whose values go into an array parameter as they are.
_PLAIN = (
    types.Integer,
    types.String,
    types.Boolean,
    types.Float,
    types.Numeric,
    types.DateTime,
    types.Date,
    types.Time,
    types.Uuid,
    types.LargeBinary,
)
_ARRAYS = (types.ARRAY, types.JSON, types.Enum, types.Interval)


def _plain(column_type: Any) -> bool:
    if isinstance(column_type, types.TypeDecorator):
        column_type = column_type.impl_instance
    return isinstance(column_type, _PLAIN) and not isinstance(column_type, _ARRAYS)


def can_unnest(session: AsyncSession, table: Table, names: Sequence[str]) -> bool:
    """True on PostgreSQL through asyncpg when every column named is :func:`_plain`."""
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql" or dialect.driver != "asyncpg":
        return False
    return all(_plain(table.c[name].type) for name in names)


def unnest_source(table: Table, names: Sequence[str]) -> Any:
    """``SELECT * FROM unnest(:c0, :c1, …)``: one array parameter per column of ``names``."""
    arrays = [
        bindparam(f"asyncdb_unnest_{i}", type_=ARRAY(table.c[name].type))
        for i, name in enumerate(names)
    ]
    rows = func.unnest(*arrays).table_valued(*(f"c{i}" for i in range(len(names)))).render_derived()
    return select(*rows.columns)


def unnest_params(params: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """The array parameters of :func:`unnest_source`: one list per column."""
    return {f"asyncdb_unnest_{i}": [row[name] for row in params] for i, name in enumerate(names)}
