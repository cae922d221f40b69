"""Repository[T]: typed CRUD, soft delete, filters, pagination, bulk and upsert."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import (
    Select,
    Table,
    and_,
    delete,
    exists,
    func,
    inspect,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper

from . import _bulk
from ._audit import is_audited, mark_instance
from ._capabilities import supports
from ._changes import record_changes, recorded_by_caller
from ._context import AuditContext
from ._errors import DatabaseUnavailableError, NotFoundError, TransactionError, ValidationError
from ._filters import (
    build_filters,
    build_order,
    check_columns,
    check_int,
    column_names,
    parse_order_with_key,
)
from ._models import utcnow
from ._pagination import CursorCodec, KeysetPage, Page, keyset_after
from ._settings import DEFAULT_MAX_PAGE_SIZE
from ._uow import AsyncUnitOfWork, active_unit_for, inherited_unit_for

if TYPE_CHECKING:
    from ._cache import RepositoryCache
    from ._manager import AsyncDatabaseManager

__all__ = ["Repository"]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_PAGE_SIZE = 50
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 100_000


class Repository(Generic[T]):
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

    def __init__(
        self,
        model: type[T],
        db: AsyncDatabaseManager | None = None,
        *,
        session: AsyncSession | None = None,
        unit: AsyncUnitOfWork | None = None,
        audit: bool = True,
        cache: RepositoryCache | None = None,
        max_page_size: int | None = None,
    ) -> None:
        try:
            mapper: Mapper[T] = inspect(model)
        except Exception as exc:
            msg = f"Repository needs a mapped model class (got {model!r})."
            raise ValidationError(msg) from exc
        if sum(x is not None for x in (db, session, unit)) != 1:
            msg = "Give a Repository exactly one of: a manager (db), session=, or unit=."
            raise ValidationError(msg)
        self.model = model
        self.db = db if db is not None else (unit.db if unit is not None else None)
        self._session = session
        self._unit = unit
        self._mapper = mapper
        self.table: Table = mapper.local_table  # type: ignore[assignment]
        self._pk_cols = list(mapper.primary_key)
        self._pk_names = [mapper.get_property_by_column(c).key for c in self._pk_cols]
        self._columns = column_names(model)
        self._soft = "deleted_at" in self._columns
        self._audited = audit and is_audited(model)
        self._audit_flag = audit
        self._defaults: AuditContext | None = None
        self.cache = cache
        if max_page_size is None:
            max_page_size = self.db.settings.max_page_size if self.db else DEFAULT_MAX_PAGE_SIZE
        self.max_page_size = max_page_size
        self._codec: CursorCodec | None = None
        # Filled by the bulk operations on first use.
        self._attr_columns: dict[str, Any] | None = None
        self._defaulted_columns: list[tuple[str, Any]] | None = None
        self._names_are_columns = False
        self._column_to_attr: dict[str, str] | None = None
        if cache is not None and self.db is not None:
            cache.attach(self.db)

    def __repr__(self) -> str:
        return f"<Repository {self.model.__name__}>"

    # -- audit defaults ------------------------------------------------------------------

    def set_context(
        self, *, user_id: object = None, session_id: object = None, correlation_id: object = None
    ) -> Repository[T]:
        """Audit defaults for this repository's writes (the lowest precedence)."""
        self._defaults = AuditContext.of(user_id, session_id, correlation_id)
        return self

    # -- session scopes ------------------------------------------------------------------

    def _bound_session(self) -> AsyncSession | None:
        if self._session is not None:
            return self._session
        if self._unit is not None:
            return self._unit.session
        assert self.db is not None
        unit = active_unit_for(self.db)
        if unit is not None:
            return unit.session
        if inherited_unit_for(self.db) is not None:
            msg = (
                "This task was started inside a unit of work it cannot share: a session "
                "is not safe across concurrent tasks. Open a unit per task (`async with "
                "AsyncUnitOfWork(db)` inside the task), or await the call in the task "
                "that owns the unit."
            )
            raise TransactionError(msg)
        return None

    async def _read(self, op: Callable[[AsyncSession], Awaitable[R]]) -> R:
        session = self._bound_session()
        if session is not None:
            return await op(session)
        assert self.db is not None
        for attempt in (1, 2):
            try:
                async with self.db.autocommit_session() as own:
                    return await op(own)
            except DatabaseUnavailableError:
                # A read with no transaction is safe to repeat once: the pool has
                # dropped the dead connection by now and hands out a live one.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _write(self, op: Callable[[AsyncSession], Awaitable[R]]) -> R:
        session = self._bound_session()
        if session is not None:
            with recorded_by_caller(session.sync_session):
                return await op(session)
        assert self.db is not None
        async with AsyncUnitOfWork(self.db) as unit:
            # Each operation records the exact keys it changed (see _changed).
            with recorded_by_caller(unit.session.sync_session):
                return await op(unit.session)

    async def _write_one_statement(self, op: Callable[[AsyncSession], Awaitable[R]]) -> R:
        """Run a write that sends exactly one statement.

        Outside a unit of work it needs no transaction: the statement commits itself
        (autocommit), so the call costs one round trip instead of BEGIN + it + COMMIT.
        The session's commit still runs, so the change log is published as usual.
        """
        session = self._bound_session()
        if session is not None:
            with recorded_by_caller(session.sync_session):
                return await op(session)
        assert self.db is not None
        async with self.db.autocommit_session() as own:
            with recorded_by_caller(own.sync_session):
                result = await op(own)
            await own.commit()
            return result

    @contextlib.asynccontextmanager
    async def _atomic(self, session: AsyncSession) -> AsyncIterator[None]:
        """All or nothing inside an outer transaction: a SAVEPOINT around the call.

        Without savepoints (DuckDB) a failed statement aborts the whole outer transaction.
        """
        if not supports(session.get_bind().dialect.name, "savepoint"):
            yield
            return
        async with session.begin_nested():
            yield

    def _mark(self, session: AsyncSession, instance: object) -> None:
        mark_instance(session.sync_session, instance, self._defaults, self._audit_flag)

    def _changed(self, session: AsyncSession, keys: Iterable[tuple[Any, ...]] | None) -> None:
        record_changes(session.sync_session, self.model, keys)

    # -- primary keys --------------------------------------------------------------------

    def _coerce_id(self, ident: Any) -> Any:
        if len(self._pk_cols) > 1:
            if isinstance(ident, Mapping):
                return {k: ident[k] for k in self._pk_names}
            if isinstance(ident, (tuple, list)) and len(ident) == len(self._pk_cols):
                return tuple(ident)
            msg = f"{self.model.__name__} has a composite key: pass a tuple of {self._pk_names}."
            raise ValidationError(msg)
        try:
            python_type = self._pk_cols[0].type.python_type
        except NotImplementedError:
            return ident
        if python_type is int:
            if isinstance(ident, bool) or not isinstance(ident, int):
                msg = f"{self.model.__name__} ids are integers (got {type(ident).__name__})."
                raise ValidationError(msg)
        elif python_type is uuid.UUID and isinstance(ident, str):
            try:
                return uuid.UUID(ident)
            except ValueError as exc:
                msg = f"{self.model.__name__} ids are UUIDs; {ident!r} is not one."
                raise ValidationError(msg) from exc
        elif python_type is str and not isinstance(ident, str):
            msg = f"{self.model.__name__} ids are strings (got {type(ident).__name__})."
            raise ValidationError(msg)
        return ident

    def _pk_where(self, ident: Any) -> Any:
        if len(self._pk_cols) == 1:
            return self._pk_cols[0] == ident
        values = ident.values() if isinstance(ident, Mapping) else ident
        return and_(*(c == v for c, v in zip(self._pk_cols, values, strict=False)))

    def _pk_tuple(self, ident: Any) -> tuple[Any, ...]:
        """A coerced id as the key tuple the change log and the cache use."""
        if isinstance(ident, Mapping):
            return tuple(ident[name] for name in self._pk_names)
        return ident if isinstance(ident, tuple) else (ident,)

    def _key_of(self, obj: Any) -> tuple[Any, ...]:
        return tuple(self._mapper.primary_key_from_instance(obj))

    def _is_deleted(self, obj: Any) -> bool:
        return self._soft and getattr(obj, "deleted_at", None) is not None

    def _not_found(self, ident: Any) -> NotFoundError:
        msg = (
            f"No {self.model.__name__} with id {ident!r}. Check the id, "
            "or pass with_deleted=True for soft-deleted rows."
        )
        return NotFoundError(msg)

    # -- reads by id -----------------------------------------------------------------------

    async def _load_by_id(
        self, session: AsyncSession, ident: Any, *, for_update: bool = False
    ) -> T | None:
        """The one place every read by primary key passes (the cache hooks in here)."""
        if self.cache is not None and not for_update:
            cached: T | None = await self.cache.get_by_id(self, session, ident)
            return cached
        return await session.get(self.model, ident, with_for_update=for_update or None)

    async def get_by_id(self, id: Any, *, with_deleted: bool = False) -> T | None:
        """The row with primary key ``id``, or None (also for a soft-deleted row)."""
        ident = self._coerce_id(id)
        if self.cache is not None and self._bound_session() is None:
            # A hit outside a unit of work needs no session and no connection.
            hit: T | None = await self.cache.get_detached(self, ident)
            if hit is not None:
                return None if not with_deleted and self._is_deleted(hit) else hit

        async def op(session: AsyncSession) -> T | None:
            obj = await self._load_by_id(session, ident)
            if obj is None or (not with_deleted and self._is_deleted(obj)):
                return None
            return obj

        return await self._read(op)

    async def get(self, id: Any, *, with_deleted: bool = False) -> T:
        """The row with primary key ``id``; :class:`NotFoundError` when there is none."""
        obj = await self.get_by_id(id, with_deleted=with_deleted)
        if obj is None:
            raise self._not_found(id)
        return obj

    # -- writes ----------------------------------------------------------------------------

    def _check_values(self, values: Mapping[str, Any], *, row: int | None = None) -> None:
        try:
            check_columns(self.model, values)
        except ValidationError as exc:
            if row is None:
                raise
            raise ValidationError(f"Row {row}: {exc}") from None

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
            self._check_values(values)
            obj = self.model(**values)

        async def op(session: AsyncSession) -> T:
            self._mark(session, obj)
            session.add(obj)
            await session.flush()
            self._changed(session, [self._key_of(obj)])
            return obj

        if instance is None and self._fast_path():
            # Column values only, no audit row: the flush is a single INSERT.
            return await self._write_one_statement(op)
        return await self._write(op)

    def _check_update(self, values: Mapping[str, Any]) -> None:
        self._check_values(values)
        for name in self._pk_names:
            if name in values:
                msg = (
                    f"update() cannot change the primary key {name!r} of {self.model.__name__}. "
                    "Pass the id positionally (update(7, name=...)); to change a key, create "
                    "a new row and delete the old one."
                )
                raise ValidationError(msg)

    async def update(self, id: Any, /, **values: Any) -> T:
        """Set ``values`` on the row with primary key ``id`` and return it.

        :class:`NotFoundError` when there is no such (non-deleted) row.
        """
        ident = self._coerce_id(id)
        self._check_update(values)

        async def op(session: AsyncSession) -> T:
            obj = await self._load_by_id(session, ident, for_update=True)
            if obj is None or self._is_deleted(obj):
                raise self._not_found(id)
            self._mark(session, obj)
            for key, value in values.items():
                setattr(obj, key, value)
            await session.flush()
            self._changed(session, [self._key_of(obj)])
            return obj

        if self._fast_path():
            # One UPDATE ... RETURNING, outside any transaction when standalone.
            return await self._write_one_statement(
                lambda session: self._update_returning(session, ident, values)
            )
        return await self._write(op)

    def _fast_path(self) -> bool:
        # One UPDATE ... RETURNING instead of SELECT + UPDATE, when no old values are
        # needed for the audit log.
        return not self._audited

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
        self._changed(session, [self._key_of(obj)])
        return obj

    async def _update_then_read(self, session: AsyncSession, stmt: Any, ident: Any) -> T:
        """UPDATE, then read the row back: for backends without UPDATE ... RETURNING."""
        result = await session.execute(stmt.execution_options(synchronize_session=False))
        if getattr(result, "rowcount", 1) == 0:
            raise self._not_found(ident)
        obj = await session.get(self.model, ident, populate_existing=True)
        if obj is None:
            raise self._not_found(ident)
        self._changed(session, [self._key_of(obj)])
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
                stmt = delete(self.model).where(self._pk_where(ident)).returning(*self._pk_cols)
                stmt = stmt.execution_options(synchronize_session="fetch")
                if (await session.execute(stmt)).first() is None:
                    raise self._not_found(id)
                self._changed(session, [self._pk_tuple(ident)])
                return
            obj = await self._load_by_id(session, ident, for_update=True)
            if obj is None:
                raise self._not_found(id)
            self._mark(session, obj)
            key = self._key_of(obj)
            await session.delete(obj)
            await session.flush()
            self._changed(session, [key])

        if self._fast_path():
            await self._write_one_statement(op)  # a single DELETE ... RETURNING
        else:
            await self._write(op)

    def _resolve_soft(self, soft: bool | None) -> bool:
        if soft is None:
            return self._soft
        if soft and not self._soft:
            msg = (
                f"{self.model.__name__} has no deleted_at column, so it cannot be soft-deleted. "
                "Add SoftDeleteMixin to the model, or delete with soft=False."
            )
            raise ValidationError(msg)
        return bool(soft)

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
            self._changed(session, [self._key_of(obj)])
            return obj

        return await self._write(op)

    # -- queries ---------------------------------------------------------------------------

    def _where(self, filters: Mapping[str, Any], with_deleted: bool) -> list[Any]:
        conditions = build_filters(self.model, filters)
        if self._soft and not with_deleted:
            conditions.append(self.model.deleted_at.is_(None))  # type: ignore[attr-defined]
        return conditions

    def _ordered(self, stmt: Select[Any], order_by: str | Sequence[str] | None) -> Select[Any]:
        order = parse_order_with_key(self.model, order_by, self._pk_names)
        return stmt.order_by(*build_order(self.model, order))

    async def get_all(
        self,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        with_deleted: bool = False,
    ) -> list[T]:
        """Every row (ordered by ``order_by``, then primary key), optionally a slice."""
        return await self.find_by(
            order_by=order_by, limit=limit, offset=offset, with_deleted=with_deleted
        )

    async def find_by(
        self,
        *,
        order_by: str | Sequence[str] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        with_deleted: bool = False,
        **filters: Any,
    ) -> list[T]:
        """Rows matching every filter: ``name="x"``, ``qty__gte=3``, ``id__in=[1, 2]``."""
        if limit is not None:
            check_int("limit", limit, 0)
        if offset is not None:
            check_int("offset", offset, 0)
        stmt = self._ordered(
            select(self.model).where(*self._where(filters, with_deleted)), order_by
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        if offset:
            stmt = stmt.offset(offset)

        async def op(session: AsyncSession) -> list[T]:
            return list((await session.scalars(stmt)).all())

        return await self._read(op)

    async def find_one_by(
        self,
        *,
        order_by: str | Sequence[str] | None = None,
        with_deleted: bool = False,
        **filters: Any,
    ) -> T | None:
        """The first row matching the filters (by ``order_by``, then key), or None."""
        rows = await self.find_by(order_by=order_by, limit=1, with_deleted=with_deleted, **filters)
        return rows[0] if rows else None

    async def count(self, *, with_deleted: bool = False, **filters: Any) -> int:
        """How many rows match the filters."""
        stmt = (
            select(func.count()).select_from(self.model).where(*self._where(filters, with_deleted))
        )

        async def op(session: AsyncSession) -> int:
            return int((await session.execute(stmt)).scalar_one())

        return await self._cached_query("count", filters, with_deleted, op)

    async def exists(self, *, with_deleted: bool = False, **filters: Any) -> bool:
        """True when at least one row matches (an EXISTS query, not a COUNT)."""
        conditions = self._where(filters, with_deleted) or [true()]
        stmt = select(exists().where(*conditions).select_from(self.table))

        async def op(session: AsyncSession) -> bool:
            return bool((await session.execute(stmt)).scalar())

        return await self._cached_query("exists", filters, with_deleted, op)

    async def _cached_query(
        self,
        kind: str,
        filters: Mapping[str, Any],
        with_deleted: bool,
        op: Callable[[AsyncSession], Awaitable[R]],
    ) -> R:
        cache = self.cache
        if cache is None:
            return await self._read(op)
        if self._bound_session() is None:
            found, value = await cache.peek_query(self, kind, filters, with_deleted)
            if found:
                return value  # type: ignore[no-any-return]

        async def cached(session: AsyncSession) -> R:
            result: R = await cache.query(self, session, kind, filters, with_deleted, op)
            return result

        return await self._read(cached)

    # -- pagination ------------------------------------------------------------------------

    async def paginate(
        self,
        page: int = 1,
        page_size: int = DEFAULT_PAGE_SIZE,
        *,
        order_by: str | Sequence[str] | None = None,
        with_deleted: bool = False,
        **filters: Any,
    ) -> Page[T]:
        """Page ``page`` (from 1) of ``page_size`` rows, with the total count."""
        check_int("page", page, 1)
        check_int("page_size", page_size, 1, self.max_page_size)
        where = self._where(filters, with_deleted)
        count_stmt = select(func.count()).select_from(self.model).where(*where)
        stmt = self._ordered(select(self.model).where(*where), order_by)
        stmt = stmt.limit(page_size).offset((page - 1) * page_size)

        async def op(session: AsyncSession) -> Page[T]:
            total = int((await session.execute(count_stmt)).scalar_one())
            items = list((await session.scalars(stmt)).all()) if total else []
            return Page(items=items, total=total, page=page, page_size=page_size)

        return await self._read(op)

    def _cursor_codec(self) -> CursorCodec:
        if self._codec is None:
            if self.db is not None:
                secret = self.db.settings.url
            else:
                assert self._session is not None
                bind = self._session.bind
                url = getattr(bind, "url", None)
                secret = url.render_as_string(hide_password=False) if url is not None else ""
            key = hashlib.sha256(b"asyncdb-keyset-cursor\0" + secret.encode()).digest()
            self._codec = CursorCodec(key)
        return self._codec

    async def paginate_keyset(
        self,
        after: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        *,
        order_by: str | Sequence[str] | None = None,
        with_deleted: bool = False,
        **filters: Any,
    ) -> KeysetPage[T]:
        """The ``limit`` rows after the cursor ``after`` (from the start when None).

        The ordering always ends in the primary key, so rows with equal sort values
        are neither skipped nor repeated. Pass ``next_cursor`` back unchanged.
        """
        check_int("limit", limit, 1, self.max_page_size)
        order = parse_order_with_key(self.model, order_by, self._pk_names)
        scope = f"{self.table.name}|" + ",".join(("-" if d else "") + f for f, d in order)
        codec = self._cursor_codec()
        where = self._where(filters, with_deleted)
        if after is not None:
            values = codec.decode(scope, after, len(order))
            where.append(keyset_after(self.model, order, values))
        stmt = (
            select(self.model)
            .where(*where)
            .order_by(*build_order(self.model, order))
            .limit(limit + 1)
        )

        async def op(session: AsyncSession) -> KeysetPage[T]:
            rows = list((await session.scalars(stmt)).all())
            has_more = len(rows) > limit
            rows = rows[:limit]
            cursor = None
            if has_more:
                last = rows[-1]
                cursor = codec.encode(scope, [getattr(last, field) for field, _ in order])
            return KeysetPage(items=rows, next_cursor=cursor, has_more=has_more)

        return await self._read(op)

    # -- bulk operations -------------------------------------------------------------------

    async def bulk_create(
        self, rows: Iterable[Mapping[str, Any] | T], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> int:
        """Insert many rows in batches, all or nothing; returns how many were inserted.

        ``rows`` may be any iterable (a generator streams: only one batch is held at a
        time). A bad row fails the whole call with an error naming its position.
        """
        self._check_batch(batch_size)

        async def op(session: AsyncSession) -> int:
            async with self._atomic(session):
                return await _bulk.insert_rows(self, session, rows, batch_size)

        return await self._write(op)

    async def bulk_update(
        self, rows: Iterable[Mapping[str, Any]], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> int:
        """Update many rows, each a mapping holding its primary key; all or nothing.

        A row whose id does not exist (or is soft-deleted) fails the call with
        :class:`NotFoundError`. Returns how many rows were updated.
        """
        self._check_batch(batch_size)

        async def op(session: AsyncSession) -> int:
            async with self._atomic(session):
                return await _bulk.update_rows(self, session, rows, batch_size)

        return await self._write(op)

    async def bulk_delete(
        self, ids: Iterable[Any], *, soft: bool | None = None, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> int:
        """Delete many rows by id (soft by default when the model can); returns the count.

        Ids that do not exist (or are already soft-deleted, for a soft delete) are skipped.
        """
        self._check_batch(batch_size)
        soft_delete = self._resolve_soft(soft)
        idents = [self._coerce_id(i) for i in ids]

        async def op(session: AsyncSession) -> int:
            async with self._atomic(session):
                return await _bulk.delete_rows(self, session, idents, soft_delete, batch_size)

        return await self._write(op)

    async def upsert(self, values: Mapping[str, Any], *, conflict_on: Sequence[str]) -> T:
        """Insert ``values``, or update the row that has the same ``conflict_on`` values.

        Uses the backend's native ``INSERT ... ON CONFLICT DO UPDATE``; the columns in
        ``conflict_on`` must form the primary key or a unique constraint.
        """
        self._check_values(values)
        conflict = _bulk.check_conflict_target(self, conflict_on, values)

        async def op(session: AsyncSession) -> T:
            return await _bulk.upsert_one(self, session, dict(values), conflict)

        return await self._write(op)

    async def bulk_upsert(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        conflict_on: Sequence[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> int:
        """Upsert many rows in batches, all or nothing; returns how many were written."""
        self._check_batch(batch_size)
        conflict = _bulk.check_conflict_target(self, conflict_on, None)

        async def op(session: AsyncSession) -> int:
            async with self._atomic(session):
                return await _bulk.upsert_rows(self, session, rows, conflict, batch_size)

        return await self._write(op)

    @staticmethod
    def _check_batch(batch_size: int) -> None:
        check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
