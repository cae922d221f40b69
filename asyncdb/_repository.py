"""Repository[T]: typed CRUD, soft delete, filters and pagination; bulk writes and upsert
come from :class:`~asyncdb._repository_bulk.BulkWrites`, writes by filter from
:class:`~asyncdb._writes_by_filter.FilterWrites`, counts from
:class:`~asyncdb._repository_counts.CountingReads`."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    delete,
    exists,
    func,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ._aggregates import Annotate
from ._audit_create import create_audited
from ._bulk import with_defaults
from ._context import AuditContext
from ._errors import (
    ValidationError,
)
from ._expressions import Where
from ._filters import (
    as_int,
    build_order,
    check_flag,
    parse_order_with_key,
)
from ._loading import LoadArg
from ._models import utcnow
from ._pagination import (
    KeysetPage,
    Page,
    check_cursor_values,
    keyset_after,
)
from ._repository_base import DEFAULT_PAGE_SIZE, PAGE_LIMIT, PAGE_OFFSET
from ._repository_bulk import BulkWrites
from ._repository_counts import CountingReads
from ._uow import (
    register_repository_factory,
)
from ._values import MAX_INT64
from ._writes_by_filter import FilterWrites

__all__ = ["Repository"]


class _NotOneStatement(Exception):
    """The values do not allow the one-statement audited create (raised before any SQL)."""


T = TypeVar("T")
R = TypeVar("R")


class Repository(CountingReads[T], FilterWrites[T], BulkWrites[T]):
    """Data access for one model, as async methods that each run one operation.

    Three ways to bind it:

    * ``Repository(User, db)``: each call is its own transaction (reads run without
      one), or joins the :class:`AsyncUnitOfWork` active in the current task;
    * ``uow.get_repository(User)``: bound to that unit of work;
    * ``Repository(User, session=s)``: a session the caller manages (nothing is
      committed; writes are flushed).

    Field names in filters, orderings and values are checked against the model's
    mapped columns before any SQL is sent.
    """

    def set_context(
        self, *, user_id: object = None, session_id: object = None, correlation_id: object = None
    ) -> Repository[T]:
        """Audit defaults for this repository's writes (the lowest precedence).

        The defaults are task-local, like :func:`audit_context`: they apply to writes
        made by the task that set them and by tasks it creates afterwards. A repository
        shared by concurrent requests therefore never gives one request's actor to
        another's rows. Set them in each request (or use ``audit_context``).
        """
        if self._context_var is None:
            self._context_var = contextvars.ContextVar(
                f"asyncdb_repository_context_{id(self)}", default=None
            )
        self._context_var.set(AuditContext.of(user_id, session_id, correlation_id))
        return self

    async def get_by_id(
        self,
        id: Any,
        *,
        with_deleted: bool = False,
        load: LoadArg = None,
        annotate: Annotate = None,
    ) -> T | None:
        """The row with primary key ``id``, or None (also for a soft-deleted row).

        ``load`` and ``annotate`` as for :meth:`find_by`.
        """
        check_flag("with_deleted", with_deleted)
        ident = self._coerce_id(id)
        if load is not None or annotate:
            # The cache holds column values only: such a read goes to the database.
            stmt = self._select(annotate).where(
                *self._where({}, with_deleted), self._pk_where(ident)
            )
            rows = await self._read_rows(self._with_load(stmt, load, with_deleted), annotate)
            return rows[0] if rows else None
        if self.cache is not None and self._bound_session() is None:
            # A hit outside a unit of work needs no session and no connection.
            hit: T | None = await self.cache.get_detached(self, ident)
            if hit is not None:
                return None if not with_deleted and self._is_deleted(hit) else hit

        if self.cache is None and self._bound_session() is None:
            plain = self._standalone_plain()
            if plain is not None:  # a plain model: a Core row, no session (_plain_load)
                return await self._plain_by_id(plain, ident, with_deleted)
            # A session of its own: one statement built once per model (no Session.get).
            return await self._read(lambda own: self._select_by_id(own, ident, with_deleted))

        async def op(session: AsyncSession) -> T | None:
            obj = await self._load_by_id(session, ident)
            if obj is None or (not with_deleted and self._is_deleted(obj)):
                return None
            return obj

        return await self._read(op, fills_cache=self.cache is not None)

    async def get(
        self,
        id: Any,
        *,
        with_deleted: bool = False,
        load: LoadArg = None,
        annotate: Annotate = None,
    ) -> T:
        """The row with primary key ``id``; :class:`NotFoundError` when there is none."""
        obj = await self.get_by_id(id, with_deleted=with_deleted, load=load, annotate=annotate)
        if obj is None:
            raise self._not_found(id)
        return obj

    async def create(self, instance: T | None = None, /, **values: Any) -> T:
        """Insert one row from keyword values (or a model instance) and return it."""
        if instance is not None:
            if values:
                msg = "Pass either a model instance or keyword values to create(), not both."
                raise ValidationError(msg)
            if not isinstance(instance, self.model):
                got = type(instance).__name__
                msg = f"create() takes a {self.model.__name__} instance (got {got})."
                raise ValidationError(msg)
            obj = instance
        else:
            obj = self.model(**self._check_values(values))

        async def op(session: AsyncSession) -> T:
            self._mark(session, obj)
            session.add(obj)
            await session.flush()  # the flush records the new key (_changes._record_flush)
            return obj

        if instance is None and self._fast_path():
            # Column values only, no audit row: the flush is a single INSERT.
            return await self._write_one_statement(op)
        if instance is None and self._audited and self._one_statement_audit():
            # PostgreSQL: the row and its audit row in one statement (_audit_create).
            try:
                return await self._write_one_statement(lambda s: self._create_audited(s, obj))
            except _NotOneStatement:
                pass  # nothing was sent: the two statements go in one transaction instead
        return await self._write(op)

    async def _create_audited(self, session: AsyncSession, obj: T) -> T:
        context = self._audit_context(session)
        assert context is not None
        values = with_defaults(
            self._info, {k: v for k, v in vars(obj).items() if k in self._info.columns}
        )
        created = await create_audited(session, self._info, values, context)
        if created is None:
            # Never the ORM flush here: outside a unit this session autocommits each
            # statement, and the row and its audit row must commit together.
            raise _NotOneStatement
        self._changed(session, [self._info.key_of(created)])
        return created  # type: ignore[no-any-return]

    async def update(self, id: Any, /, **values: Any) -> T:
        """Set ``values`` on the row with primary key ``id`` and return it.

        :class:`NotFoundError` when there is no such (non-deleted) row.
        """
        ident = self._coerce_id(id)
        values = self._check_update(values)

        async def op(session: AsyncSession) -> T:
            obj = await self._load_by_id(session, ident, for_update=True)
            if obj is None or self._is_deleted(obj):
                raise self._not_found(id)
            self._mark(session, obj)
            for key, value in values.items():
                setattr(obj, key, value)
            await session.flush()
            self._changed(session, [self._info.key_of(obj)])
            return obj

        if self._fast_path():
            # One UPDATE ... RETURNING, outside any transaction when standalone.
            return await self._write_one_statement(
                lambda session: self._update_returning(session, ident, values)
            )
        return await self._write(op)

    async def _update_returning(
        self, session: AsyncSession, ident: Any, values: Mapping[str, Any]
    ) -> T:
        stmt = update(self.model).where(self._pk_where(ident))
        if self._soft:
            stmt = stmt.where(self.model.deleted_at.is_(None))  # type: ignore[attr-defined]
        if not values:
            current = await self._load_by_id(session, ident)
            if current is None or self._is_deleted(current):
                raise self._not_found(ident)
            return current
        if not session.get_bind().dialect.update_returning:  # MariaDB/MySQL
            return await self._update_then_read(session, stmt.values(**values), ident)
        stmt = (
            stmt.values(**values)
            .returning(self.model)
            .execution_options(populate_existing=True, synchronize_session=False)
        )
        obj: T | None = (await session.execute(stmt)).scalar_one_or_none()
        if obj is None:
            raise self._not_found(ident)
        self._changed(session, [self._info.key_of(obj)])
        return obj

    async def _update_then_read(self, session: AsyncSession, stmt: Any, ident: Any) -> T:
        """UPDATE, then read the row back: for backends without UPDATE ... RETURNING."""
        result: Any = await session.execute(stmt.execution_options(synchronize_session=False))
        if result.rowcount == 0:  # a CursorResult (FOUND_ROWS: matched, not changed, rows)
            raise self._not_found(ident)
        obj = await session.get(self.model, ident, populate_existing=True)
        if obj is None:
            raise self._not_found(ident)
        self._changed(session, [self._info.key_of(obj)])
        return obj

    async def delete(self, id: Any, *, soft: bool | None = None) -> None:
        """Delete the row: soft (sets ``deleted_at``) by default when the model can.

        ``soft=True`` on a model without ``deleted_at`` is a :class:`ValidationError`;
        ``soft=False`` deletes for good (also a row that is already soft-deleted).
        """
        ident = self._coerce_id(id)
        soft = self._resolve_soft(soft)
        if soft:
            await self.update(id, deleted_at=utcnow())
            return

        async def op(session: AsyncSession) -> None:
            if self._fast_path():
                stmt = (
                    delete(self.model)
                    .where(self._pk_where(ident))
                    .returning(*self._info.pk_columns)
                )
                stmt = stmt.execution_options(synchronize_session="fetch")
                if (await session.execute(stmt)).first() is None:
                    raise self._not_found(id)
                self._changed(session, [self._info.pk_tuple(ident)])
                return
            obj = await self._load_by_id(session, ident, for_update=True)
            if obj is None:
                raise self._not_found(id)
            self._mark(session, obj)
            key = self._info.key_of(obj)
            await session.delete(obj)
            await session.flush()
            self._changed(session, [key])

        if self._fast_path():
            await self._write_one_statement(op)  # a single DELETE ... RETURNING
        else:
            await self._write(op)

    async def restore(self, id: Any) -> T:
        """Undo a soft delete; :class:`ValidationError` if the row is not deleted."""
        ident = self._coerce_id(id)
        if not self._soft:
            msg = f"{self.model.__name__} has no deleted_at column; there is nothing to restore."
            raise ValidationError(msg)

        async def op(session: AsyncSession) -> T:
            obj = await self._load_by_id(session, ident, for_update=True)
            if obj is None:
                raise self._not_found(id)
            if not self._is_deleted(obj):
                msg = f"{self.model.__name__} {id!r} is not deleted, so it cannot be restored."
                raise ValidationError(msg)
            self._mark(session, obj)
            obj.deleted_at = None  # type: ignore[attr-defined]
            await session.flush()
            self._changed(session, [self._info.key_of(obj)])
            return obj

        return await self._write(op)

    async def get_all(
        self,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        with_deleted: bool = False,
        load: LoadArg = None,
        annotate: Annotate = None,
    ) -> list[T]:
        """Every row (ordered by ``order_by``, then primary key), optionally a slice."""
        return await self.find_by(
            order_by=order_by,
            limit=limit,
            offset=offset,
            with_deleted=with_deleted,
            load=load,
            annotate=annotate,
        )

    async def find_by(
        self,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        with_deleted: bool = False,
        load: LoadArg = None,
        where: Where = None,
        annotate: Annotate = None,
        **filters: Any,
    ) -> list[T]:
        """Rows matching every filter: ``name="x"``, ``qty__gte=3``, ``id__in=[1, 2]``.

        ``load`` eager-loads relationships: names, dotted for nesting
        (``load=["author", "comments.author"]``), or SQLAlchemy loader options.
        ``where`` adds SQLAlchemy conditions on the model (``Post.score > 3``) or a
        base ``select(Post)``; keyword filters and soft-delete filtering still apply.
        ``annotate`` sets per-row counts and flags over relationships as attributes
        (``annotate={"favorites": Count("favorited_by")}``), in the same query.
        """
        if limit is not None:
            limit = as_int("limit", limit, 0)
        if offset is not None:
            offset = as_int("offset", offset, 0)
        conditions = self._where(filters, with_deleted, where)
        plain = None if load is not None or annotate else self._standalone_plain()
        base = self._select(annotate) if plain is None else plain[0].select()
        stmt = self._ordered(base.where(*conditions), order_by)
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)
        if plain is not None:  # a plain model: Core rows, no session (_plain_load)
            return await self._plain_rows(plain, stmt)
        return await self._read_rows(self._with_load(stmt, load, with_deleted), annotate)

    async def find_one_by(
        self,
        *,
        order_by: str | Sequence[str] | None = None,
        with_deleted: bool = False,
        load: LoadArg = None,
        where: Where = None,
        annotate: Annotate = None,
        **filters: Any,
    ) -> T | None:
        """The first row matching the filters (by ``order_by``, then key), or None."""
        rows = await self.find_by(
            order_by=order_by,
            limit=1,
            with_deleted=with_deleted,
            load=load,
            where=where,
            annotate=annotate,
            **filters,
        )
        return rows[0] if rows else None

    async def count(
        self, *, with_deleted: bool = False, where: Where = None, **filters: Any
    ) -> int:
        """How many rows match the filters (and the ``where`` conditions)."""
        stmt = (
            select(func.count())
            .select_from(self.model)
            .where(*self._where(filters, with_deleted, where))
        )

        async def op(session: AsyncSession) -> int:
            return int((await session.execute(stmt)).scalar_one())

        return await self._cached_query("count", filters, with_deleted, op, keyable=where is None)

    async def exists(
        self, *, with_deleted: bool = False, where: Where = None, **filters: Any
    ) -> bool:
        """True when at least one row matches (an EXISTS query, not a COUNT)."""
        conditions = self._where(filters, with_deleted, where) or [true()]
        stmt = select(exists().where(*conditions).select_from(self.table))

        async def op(session: AsyncSession) -> bool:
            return bool((await session.execute(stmt)).scalar())

        return await self._cached_query("exists", filters, with_deleted, op, keyable=where is None)

    async def paginate(
        self,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
        *,
        order_by: str | Sequence[str] | None = None,
        with_deleted: bool = False,
        load: LoadArg = None,
        where: Where = None,
        annotate: Annotate = None,
        **filters: Any,
    ) -> Page[T]:
        """Page ``page`` (from 1) of ``page_size`` rows, with the total count."""
        page = as_int("page", page, 1)
        page_size = as_int("page_size", page_size, 1, self.max_page_size)
        if (page - 1) * page_size > MAX_INT64:
            msg = f"page {page} is beyond any table: the offset would exceed {MAX_INT64}."
            raise ValidationError(msg)
        plain = None if load is not None or annotate else self._standalone_plain()
        if plain is not None:  # a plain model: Core rows, no session (_plain_load)
            loader, engine = plain
            count_stmt, rows_stmt = self._plain_page_statements(
                loader, filters, with_deleted, where, order_by
            )
            params = {PAGE_LIMIT: page_size, PAGE_OFFSET: (page - 1) * page_size}

            async def work(conn: AsyncConnection) -> tuple[int, Sequence[Any]]:
                total = int((await conn.execute(count_stmt)).scalar_one())
                return total, (await conn.execute(rows_stmt, params)).all() if total else ()

            total, rows = await self._run_plain(engine, work)
            items = loader.instances(rows)
            return Page(items=items, total=total, page=page, page_size=page_size)

        conditions = self._where(filters, with_deleted, where)
        count_stmt = select(func.count()).select_from(self.model).where(*conditions)
        stmt = self._ordered(self._select(annotate).where(*conditions), order_by)
        stmt = stmt.limit(page_size).offset((page - 1) * page_size)
        stmt = self._with_load(stmt, load, with_deleted)

        async def op(session: AsyncSession) -> Page[T]:
            total = int((await session.execute(count_stmt)).scalar_one())
            items = await self._fetch(session, stmt, annotate) if total else []
            return Page(items=items, total=total, page=page, page_size=page_size)

        return await self._read(op)

    async def paginate_keyset(
        self,
        after: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        *,
        order_by: str | Sequence[str] | None = None,
        with_deleted: bool = False,
        load: LoadArg = None,
        where: Where = None,
        annotate: Annotate = None,
        **filters: Any,
    ) -> KeysetPage[T]:
        """The ``limit`` rows after the cursor ``after`` (from the start when None).

        The ordering always ends in the primary key, so rows with equal sort values
        are neither skipped nor repeated. Pass ``next_cursor`` back unchanged.
        """
        limit = as_int("limit", limit, 1, self.max_page_size)
        order = parse_order_with_key(self.model, order_by, self._info.pk_names, self.filterable)
        scope = f"{self.table.name}|" + ",".join(("-" if d else "") + f for f, d in order)
        codec = self._cursor_codec()
        values = None
        if after is not None:
            values = check_cursor_values(self.model, order, codec.decode(scope, after, len(order)))
        plain = None if load is not None or annotate else self._standalone_plain()
        if plain is not None:  # a plain model: Core rows, no session (_plain_load)
            stmt, params = self._plain_keyset_statement(
                plain[0], filters, with_deleted, where, order, values
            )
            rows = await self._plain_rows(plain, stmt, {**params, PAGE_LIMIT: limit + 1})
        else:
            conditions = self._where(filters, with_deleted, where)
            if values is not None:
                conditions.append(keyset_after(self.model, order, values))
            stmt = (
                self._select(annotate)
                .where(*conditions)
                .order_by(*build_order(self.model, order))
                .limit(limit + 1)
            )
            stmt = self._with_load(stmt, load, with_deleted)
            rows = await self._read(lambda session: self._fetch(session, stmt, annotate))
        has_more = len(rows) > limit
        rows = rows[:limit]
        cursor = None
        if has_more:
            last = rows[-1]
            cursor = codec.encode(scope, [getattr(last, field) for field, _ in order])
        return KeysetPage(items=rows, next_cursor=cursor, has_more=has_more)


register_repository_factory(Repository)
