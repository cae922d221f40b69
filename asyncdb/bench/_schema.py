"""The bench's own tables: uniquely named, created at start, always dropped at the end.

Two tables share one shape: ``asyncdb_bench_<hex>`` holds a fixed set of seeded rows
for the reads (and the updates, which do not change its size), and
``asyncdb_bench_<hex>_w`` takes the inserts and is emptied after every measurement, so
every stack reads the same data. Their models live on a declarative base of their
own, never on ``asyncdb.Base``.

The audited stack needs the toolkit's audit log. When the database has none, the bench
creates it and drops it again at the end (only if nothing but the bench wrote to it);
when it has one, the bench deletes exactly the rows it wrote (its table names are
unique) and never drops it.
"""

from __future__ import annotations

import dataclasses
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, String, Table, delete, func, insert, select, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .._audit_model import AUDIT_TABLE, AuditLog
from .._models import Audited
from .._settings import DEFAULT_URL
from ._relations import RelationModels, make_relation_models

__all__ = [
    "PREFIX",
    "BenchSchema",
    "foreign_tables",
    "is_scratch_sqlite",
    "make_schema",
]

#: Every table the bench creates starts with this (and nothing else should).
PREFIX = "asyncdb_bench_"
_AUDIT: Table = AuditLog.__table__  # type: ignore[assignment]


class _RowColumns:
    """The columns of both bench tables (copied into each model by declarative)."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    qty: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str | None] = mapped_column(String(200), nullable=True)


@dataclasses.dataclass
class BenchSchema:
    """The models and table names of one bench run."""

    name: str
    read_model: type[Any]
    write_model: type[Any]
    base: type[DeclarativeBase]
    #: Users, articles, tags and their links: the "list page with relations" workload.
    relations: RelationModels | None = None
    #: True when this run created the audit table (so it may drop it again).
    created_audit_table: bool = False

    @property
    def write_name(self) -> str:
        """The table that takes the inserts."""
        return str(self.write_model.__tablename__)

    @property
    def table_names(self) -> tuple[str, ...]:
        """Every table of this run: the read and write tables, then the relation tables."""
        own = (self.name, self.write_name)
        others = sorted(t for t in self.base.metadata.tables if t not in own)
        return (*own, *others)

    # -- set-up --------------------------------------------------------------------------

    async def create(self, engine: AsyncEngine, seed_rows: int) -> None:
        """Create both tables (and the audit log when missing) and seed the read table."""
        async with engine.begin() as conn:
            existing = set(await conn.run_sync(_table_names))
            if AUDIT_TABLE not in existing:
                await conn.run_sync(_create_audit_table)
                self.created_audit_table = True
            await conn.run_sync(self.base.metadata.create_all)
            if seed_rows:
                await conn.execute(insert(self.read_model.__table__), seed_values(seed_rows))
                if self.relations is not None:
                    await self.relations.seed(conn, articles=max(seed_rows // 4, 40))

    async def read_ids(self, engine: AsyncEngine) -> list[int]:
        """The primary keys of the seeded rows, ascending."""
        async with engine.connect() as conn:
            table = self.read_model.__table__
            return list((await conn.scalars(select(table.c.id).order_by(table.c.id))).all())

    # -- between measurements --------------------------------------------------------------

    async def empty_write_table(self, engine: AsyncEngine) -> None:
        """Delete every row of the insert table (and the audit rows of both tables)."""
        async with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                await conn.execute(text(f"TRUNCATE TABLE {self.write_name}"))
            else:
                await conn.execute(delete(self.write_model.__table__))
            await conn.execute(self._own_audit_rows())

    async def tidy_read_table(self, engine: AsyncEngine) -> None:
        """After updates: drop the audit rows and, on PostgreSQL, VACUUM the dead rows
        away so later reads do not pay for this stack's updates."""
        async with engine.begin() as conn:
            await conn.execute(self._own_audit_rows())
        if engine.dialect.name == "postgresql":
            async with engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text(f"VACUUM {self.name}"))

    def _own_audit_rows(self) -> Any:
        return delete(_AUDIT).where(_AUDIT.c.table_name.in_(self.table_names))

    # -- clean-up --------------------------------------------------------------------------

    async def drop(self, engine: AsyncEngine) -> None:
        """Drop both tables; remove the bench's audit rows, or the audit log it created."""
        async with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # Never wait forever on a lock: fail with the names to drop by hand.
                await conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            await conn.run_sync(self.base.metadata.drop_all, checkfirst=True)
            existing = set(await conn.run_sync(_table_names))
            if AUDIT_TABLE in existing:
                await conn.execute(self._own_audit_rows())
                if self.created_audit_table:
                    others = await conn.scalar(select(func.count()).select_from(AuditLog))
                    if not others:
                        await conn.run_sync(_drop_audit_table)


def make_schema(name: str | None = None) -> BenchSchema:
    """Models for a new run: ``asyncdb_bench_<random hex>`` and its ``_w`` twin."""
    table_name = name or f"{PREFIX}{uuid.uuid4().hex[:12]}"
    if not table_name.startswith(PREFIX) or not table_name.replace("_", "").isalnum():
        msg = f"bench table names are {PREFIX}<letters and digits> (got {table_name!r})"
        raise ValueError(msg)

    class BenchBase(DeclarativeBase):
        """A base of the run's own, so asyncdb.Base.metadata never sees its tables."""

    class BenchRow(_RowColumns, Audited, BenchBase):
        """A seeded row: the reads and updates use these."""

        __tablename__ = table_name

    class BenchWriteRow(_RowColumns, Audited, BenchBase):
        """A row inserted by create and bulk_create."""

        __tablename__ = f"{table_name}_w"

    return BenchSchema(
        name=table_name,
        read_model=BenchRow,
        write_model=BenchWriteRow,
        base=BenchBase,
        relations=make_relation_models(BenchBase, table_name),
    )


def seed_values(count: int, start: int = 0, prefix: str = "row") -> list[dict[str, Any]]:
    """``count`` rows of plausible width, as dicts of column values."""
    return [
        {"name": f"{prefix} {i:07d}", "qty": i % 1000, "note": f"seeded row number {i}"}
        for i in range(start, start + count)
    ]


def _table_names(conn: Connection) -> list[str]:
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            text(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            )
        )
        default = conn.dialect.default_schema_name
        return [name if schema == default else f"{schema}.{name}" for schema, name in rows]
    rows = conn.execute(
        text("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    )
    return [name for (name,) in rows]


def _create_audit_table(conn: Connection) -> None:
    _AUDIT.create(conn, checkfirst=True)


def _drop_audit_table(conn: Connection) -> None:
    _AUDIT.drop(conn, checkfirst=True)


async def foreign_tables(engine: AsyncEngine) -> list[str]:
    """Tables in the database that are not the bench's own (sorted)."""
    async with engine.connect() as conn:
        names = await conn.run_sync(_table_names)
    return sorted(n for n in names if not n.rpartition(".")[2].startswith(PREFIX))


def is_scratch_sqlite(url: str | URL) -> bool:
    """True for a SQLite file in the temporary directory or the embedded default file:
    places nobody keeps production data, so the bench runs there without ``--yes``."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return False
    path = Path(database).expanduser().resolve()
    temp = Path(tempfile.gettempdir()).resolve()
    default = Path(make_url(DEFAULT_URL).database or "").resolve()
    return path == default or path.is_relative_to(temp)
