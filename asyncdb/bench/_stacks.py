"""The stacks under comparison: each does the same request-shaped operations.

An operation is what one request of a web service does: open a session (or take a
connection), run the statement(s), commit or close. Every stack gets a pool of
``POOL_SIZE`` connections and no overflow.

On SQLite the plain stacks get the connection settings asyncdb applies (WAL, which the
file keeps anyway, ``synchronous=NORMAL``, a busy timeout), so the comparison measures
the libraries and not a durability setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam, event, func, insert, pool, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from .._context import audit_context
from .._manager import AsyncDatabaseManager
from .._repository import Repository
from ._base import _BUSY_TIMEOUT_MS, POOL_SIZE, TOP_ID, Stack, Target
from ._raw import raw_stack
from ._relations import asyncdb_page, orm_loop_page, orm_query_page

__all__ = [
    "POOL_SIZE",
    "STACKS",
    "Stack",
    "StackSpec",
    "Target",
    "cache_class",
]


def plain_engine(target: Target, *, pre_ping: bool = False) -> AsyncEngine:
    """A bare ``create_async_engine`` with the bench's pool size."""
    engine = create_async_engine(
        target.url,
        poolclass=pool.AsyncAdaptedQueuePool,
        pool_size=POOL_SIZE,
        max_overflow=0,
        pool_pre_ping=pre_ping,
    )
    if target.backend == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


class CoreStack(Stack):
    """SQLAlchemy Core: prepared statements on ``engine.begin()`` / ``engine.connect()``."""

    engine: AsyncEngine

    async def open(self) -> None:
        self.engine = plain_engine(self.target)
        read, write = self.read_table, self.write_table
        self._insert = insert(write).returning(write.c.id)
        self._by_id = select(read).where(read.c.id == bindparam("ident"))
        self._count = select(func.count()).select_from(read)
        self._page = (
            select(read).order_by(read.c.id).limit(bindparam("lim")).offset(bindparam("off"))
        )
        self._after = (
            select(read)
            .where(read.c.id > bindparam("after"))
            .order_by(read.c.id)
            .limit(bindparam("lim"))
        )
        self._before = (
            select(read)
            .where(read.c.id < bindparam("after"))
            .order_by(read.c.id.desc())
            .limit(bindparam("lim"))
        )

    async def close(self) -> None:
        if hasattr(self, "engine"):
            await self.engine.dispose()

    async def create(self, values: dict[str, Any]) -> Any:
        async with self.engine.begin() as conn:
            return (await conn.execute(self._insert, values)).scalar_one()

    async def get_by_id(self, ident: int) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(self._by_id, {"ident": ident})).first()

    async def update(self, ident: int, values: dict[str, Any]) -> Any:
        table = self.read_table
        stmt = update(table).where(table.c.id == ident).values(**values).returning(*table.c)
        async with self.engine.begin() as conn:
            return (await conn.execute(stmt)).first()

    async def paginate(self, page: int, page_size: int) -> Any:
        params = {"lim": page_size, "off": (page - 1) * page_size}
        async with self.engine.connect() as conn:
            total = (await conn.execute(self._count)).scalar_one()
            return total, (await conn.execute(self._page, params)).all()

    async def bulk_create(self, rows: list[dict[str, Any]]) -> Any:
        async with self.engine.begin() as conn:
            await conn.execute(insert(self.write_table), rows)

    async def bulk_upsert(self, rows: list[dict[str, Any]]) -> Any:
        table = self.write_table
        dialect = postgresql if self.target.backend == "postgresql" else sqlite
        ins = dialect.insert(table)
        stmt = ins.on_conflict_do_update(
            index_elements=[table.c.id],
            set_={name: ins.excluded[name] for name in ("name", "qty", "note")},
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt, rows)

    async def keyset_page(
        self, after: Any, limit: int, descending: bool = False
    ) -> tuple[int, Any]:
        if descending:
            stmt, params = self._before, {"after": TOP_ID if after is None else after}
        else:
            stmt, params = self._after, {"after": after or 0}
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt, {**params, "lim": limit + 1})).all()
        return _keyset_result(rows, limit, lambda row: row.id)


def _keyset_result(rows: Sequence[Any], limit: int, key: Callable[[Any], Any]) -> tuple[int, Any]:
    page = rows[:limit]
    return len(page), key(page[-1]) if len(rows) > limit else None


class OrmStack(Stack):
    """The bare SQLAlchemy ORM: ``async_sessionmaker(engine, expire_on_commit=False)``."""

    engine: AsyncEngine

    def __init__(self, target: Target, *, pre_ping: bool = False, n_plus_one: bool = False) -> None:
        super().__init__(target)
        self.pre_ping = pre_ping
        self.n_plus_one = n_plus_one
        self.read_model = target.schema.read_model
        self.write_model = target.schema.write_model

    async def open(self) -> None:
        self.engine = plain_engine(self.target, pre_ping=self.pre_ping)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def close(self) -> None:
        if hasattr(self, "engine"):
            await self.engine.dispose()

    async def create(self, values: dict[str, Any]) -> Any:
        async with self.sessions() as session:
            obj = self.write_model(**values)
            session.add(obj)
            await session.commit()
            return obj.id

    async def get_by_id(self, ident: int) -> Any:
        async with self.sessions() as session:
            return await session.get(self.read_model, ident)

    async def update(self, ident: int, values: dict[str, Any]) -> Any:
        async with self.sessions() as session:
            obj = await session.get(self.read_model, ident)
            for key, value in values.items():
                setattr(obj, key, value)
            await session.commit()
            return obj

    async def paginate(self, page: int, page_size: int) -> Any:
        model = self.read_model
        async with self.sessions() as session:
            total = await session.scalar(select(func.count()).select_from(model))
            stmt = select(model).order_by(model.id).limit(page_size).offset((page - 1) * page_size)
            return total, (await session.scalars(stmt)).all()

    async def bulk_create(self, rows: list[dict[str, Any]]) -> Any:
        async with self.sessions() as session:
            session.add_all([self.write_model(**row) for row in rows])
            await session.commit()

    async def list_page(self, reader: int, offset: int) -> Any:
        relations = self.target.schema.relations
        assert relations is not None
        page = orm_loop_page if self.n_plus_one else orm_query_page
        async with self.sessions() as session:
            return await page(session, relations, reader, offset)

    async def keyset_page(
        self, after: Any, limit: int, descending: bool = False
    ) -> tuple[int, Any]:
        model = self.read_model
        if descending:
            where, order = model.id < (TOP_ID if after is None else after), model.id.desc()
        else:
            where, order = model.id > (after or 0), model.id
        stmt = select(model).where(where).order_by(order).limit(limit + 1)
        async with self.sessions() as session:
            rows = (await session.scalars(stmt)).all()
        return _keyset_result(rows, limit, lambda row: row.id)


# -- asyncdb ---------------------------------------------------------------------------


def cache_class() -> tuple[Any, str | None]:
    """``asyncdb.RepositoryCache`` when it is a usable class, else ``(None, why not)``."""
    import asyncdb

    cls = getattr(asyncdb, "RepositoryCache", None)
    if cls is None:
        return None, "asyncdb.RepositoryCache does not exist in this version"
    if getattr(cls, "_is_protocol", False):
        return None, "asyncdb.RepositoryCache is only a protocol in this version"
    return cls, None


class AsyncdbStack(Stack):
    """asyncdb's ``Repository`` on an ``AsyncDatabaseManager`` (standalone calls)."""

    db: AsyncDatabaseManager

    def __init__(
        self,
        target: Target,
        *,
        audit: bool = False,
        metrics: bool = True,
        pre_ping: bool = True,
        cache: bool = False,
    ) -> None:
        super().__init__(target)
        self.audit = audit
        self.metrics = metrics
        self.pre_ping = pre_ping
        self.cache = cache

    async def open(self) -> None:
        db = AsyncDatabaseManager(
            self.target.url,
            pool_size=POOL_SIZE,
            max_overflow=0,
            metrics=self.metrics,
            pre_ping=self.pre_ping,
            connect_retries=1,
        )
        await db.connect()
        self.db = db
        cache = None
        if self.cache:
            cls, why = cache_class()
            if cls is None:
                raise RuntimeError(why)
            cache = cls(ttl=300.0, max_entries=self.target.cache_entries)
        schema = self.target.schema
        self.reads: Repository[Any] = Repository(
            schema.read_model, db, audit=self.audit, cache=cache
        )
        self.writes: Repository[Any] = Repository(schema.write_model, db, audit=self.audit)
        if schema.relations is not None:
            self.articles: Repository[Any] = Repository(schema.relations.article, db)

    async def close(self) -> None:
        if hasattr(self, "db"):
            await self.db.dispose()

    async def warm(self, ids: Sequence[int]) -> None:
        if self.cache:
            for ident in ids:
                await self.reads.get_by_id(ident)

    async def create(self, values: dict[str, Any]) -> Any:
        if self.audit:
            with audit_context(user_id="bench"):
                return (await self.writes.create(**values)).id
        return (await self.writes.create(**values)).id

    async def get_by_id(self, ident: int) -> Any:
        return await self.reads.get_by_id(ident)

    async def update(self, ident: int, values: dict[str, Any]) -> Any:
        if self.audit:
            with audit_context(user_id="bench"):
                return await self.reads.update(ident, **values)
        return await self.reads.update(ident, **values)

    async def list_page(self, reader: int, offset: int) -> Any:
        return await asyncdb_page(self.articles, reader, offset)

    async def paginate(self, page: int, page_size: int) -> Any:
        result = await self.reads.paginate(page=page, page_size=page_size, order_by="id")
        return result.total, result.items

    async def bulk_create(self, rows: list[dict[str, Any]]) -> Any:
        if self.audit:
            with audit_context(user_id="bench"):
                return await self.writes.bulk_create(rows)
        return await self.writes.bulk_create(rows)

    async def bulk_upsert(self, rows: list[dict[str, Any]]) -> Any:
        if self.audit:
            with audit_context(user_id="bench"):
                return await self.writes.bulk_upsert(rows, conflict_on=["id"])
        return await self.writes.bulk_upsert(rows, conflict_on=["id"])

    async def keyset_page(
        self, after: Any, limit: int, descending: bool = False
    ) -> tuple[int, Any]:
        order_by = "-id" if descending else "id"
        page = await self.reads.paginate_keyset(after=after, limit=limit, order_by=order_by)
        return len(page.items), page.next_cursor if page.has_more else None


# -- the registry ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StackSpec:
    """A named stack: its label in the report and how to build it."""

    name: str
    label: str
    build: Callable[[Target], Stack]
    #: Runs only on these backends (empty: all).
    backends: tuple[str, ...] = ()


STACKS: dict[str, StackSpec] = {
    spec.name: spec
    for spec in (
        StackSpec("raw", "raw {driver}", raw_stack),
        StackSpec("core", "SQLAlchemy Core", CoreStack),
        StackSpec("orm", "SQLAlchemy ORM (baseline)", OrmStack),
        StackSpec(
            "orm-n+1", "ORM, a query per relation per row", lambda t: OrmStack(t, n_plus_one=True)
        ),
        StackSpec(
            "orm+ping",
            "ORM, pool_pre_ping=True",
            lambda t: OrmStack(t, pre_ping=True),
            backends=("postgresql",),
        ),
        StackSpec("asyncdb", "asyncdb (metrics on, audit off)", AsyncdbStack),
        StackSpec(
            "asyncdb-nometrics", "asyncdb, metrics off", lambda t: AsyncdbStack(t, metrics=False)
        ),
        StackSpec(
            "asyncdb-noping",
            "asyncdb, pre_ping=False",
            lambda t: AsyncdbStack(t, pre_ping=False),
            backends=("postgresql",),
        ),
        StackSpec("asyncdb+audit", "asyncdb, audit on", lambda t: AsyncdbStack(t, audit=True)),
        StackSpec("asyncdb+cache", "asyncdb, warm cache", lambda t: AsyncdbStack(t, cache=True)),
    )
}
