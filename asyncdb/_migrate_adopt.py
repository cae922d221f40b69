"""Adopting toolkit tables that ``create_all`` made: compare them with the head, then stamp.

``metadata.create_all`` (the pytest plugin's fixtures, a quick script) creates the audit
log without recording a revision, so a later ``migrate()`` tries to create it again.
Adoption checks that the existing toolkit tables are exactly what the head revision
builds (tables, columns, types, nullability, indexes, constraints: Alembic's autogenerate
comparison) and, when they are, records the head in the version table without running
any revision. When they differ, nothing is recorded and the differences are listed.

These functions run on a synchronous ``Connection`` (inside ``run_sync``); the migrate
module drives them (``migrate(adopt=True)``, ``asyncdb migrate --adopt``).
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from ._schema import toolkit_metadata

__all__ = ["existing_toolkit_tables", "schema_differences", "stamp_heads"]


def existing_toolkit_tables(connection: Connection) -> list[str]:
    """The toolkit's tables that exist in the database, sorted."""
    present = set(inspect(connection).get_table_names())
    return sorted(name for name in toolkit_metadata.tables if name in present)


def schema_differences(connection: Connection, options: dict[str, Any]) -> list[str]:
    """How the database's toolkit tables differ from the head's, one line per difference.

    ``options`` are the migration context's (``include_name``, ``compare_type``...): the
    same comparison ``alembic check`` makes.
    """
    opts = {**options, "target_metadata": toolkit_metadata}
    context = MigrationContext.configure(connection, opts=opts)
    return [_describe(diff) for diff in _flatten(compare_metadata(context, toolkit_metadata))]


def stamp_heads(connection: Connection, script: ScriptDirectory, version_table: str) -> None:
    """Record the head revision(s) in ``version_table`` without running any revision."""
    context = MigrationContext.configure(connection, opts={"version_table": version_table})
    context.stamp(script, "heads")


def _flatten(diffs: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for diff in diffs:
        # Column modifications come grouped in a list of tuples.
        if isinstance(diff, list):
            flat.extend(diff)
        else:
            flat.append(diff)
    return flat


def _describe(diff: Any) -> str:
    kind = diff[0]
    if kind in {"add_table", "remove_table"}:
        table = diff[1].name
        return (
            f"table {table} is missing"
            if kind == "add_table"
            else f"table {table} is not part of the head"
        )
    if kind in {"add_column", "remove_column"}:
        table, column = diff[2], diff[3]
        where = f"{table}.{column.name}"
        return (
            f"column {where} is missing"
            if kind == "add_column"
            else f"column {where} is not part of the head"
        )
    if kind.startswith("modify_"):
        table, column = diff[2], diff[3]
        what = kind.removeprefix("modify_")
        existing, wanted = diff[-2], diff[-1]
        return f"column {table}.{column}: {what} is {existing}, the head has {wanted}"
    if kind in {"add_index", "remove_index", "add_constraint", "remove_constraint"}:
        item = diff[1]
        table = getattr(getattr(item, "table", None), "name", "?")
        noun = "index" if kind.endswith("index") else "constraint"
        state = "is missing" if kind.startswith("add") else "is not part of the head"
        return f"{noun} {item.name} on {table} {state}"
    if kind in {"add_fk", "remove_fk"}:
        item = diff[1]
        state = "is missing" if kind == "add_fk" else "is not part of the head"
        return f"foreign key {item.name} on {item.parent.name} {state}"
    return f"{kind}: {diff[1:]!r}"
