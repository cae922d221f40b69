"""The machinery under Repository: binding, session scopes, key and value checks.

Split from :mod:`._repository` so each module stays one concept: this one decides *where*
an operation runs (a unit of work, a caller's session, an autocommit or replica session)
and checks what callers pass in; :class:`~asyncdb.Repository` holds the operations.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import BigInteger, Select, Table, and_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from ._aggregates import Annotate, annotation_columns
from ._audit import mark_instance, resolve_context
from ._audit_create import eligible
from ._capabilities import supports
from ._changes import record_changes, recorded_by_caller
from ._context import AuditContext
from ._errors import (
    ConfigurationError,
    ConnectionLostError,
    DatabaseUnavailableError,
    NotFoundError,
    PoolTimeoutError,
    TransactionError,
    ValidationError,
    commit_outcome_unknown,
)
from ._expressions import Where, where_conditions
from ._filters import (
    build_order,
    check_columns,
    check_flag,
    check_int,
    filterable_fields,
    parse_order_with_key,
)
from ._loading import LoadArg, loader_options
from ._model_info import model_info
from ._pagination import (
    CursorCodec,
    codec_for_secrets,
    keyset_after,
)
from ._plain_load import PlainLoader, plain_loader
from ._relation_filters import build_conditions, has_relation_filters
from ._routing import Route, check_route
from ._settings import DEFAULT_MAX_PAGE_SIZE, cursor_secret_from_env
from ._translate import translated_error
from ._uow import (
    AsyncUnitOfWork,
    active_unit_for,
    inherited_unit_for,
)
from ._values import coerce_values

if TYPE_CHECKING:
    from ._cache import RepositoryCache
    from ._manager import AsyncDatabaseManager

__all__ = ["RepositoryCore"]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

DEFAULT_PAGE_SIZE = 50
#: Per model: ``SELECT model WHERE pk = :pk`` by ``with_deleted`` (see _select_by_id).
_BY_ID: weakref.WeakKeyDictionary[type[Any], dict[bool, Select[Any]]] = weakref.WeakKeyDictionary()
#: Orderings whose plain page statements one model keeps (callers choose orderings).
_MAX_PAGE_FORMS = 64
_PK_PARAM = "asyncdb_pk_{}"
PAGE_LIMIT = "asyncdb_limit"
PAGE_OFFSET = "asyncdb_offset"
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 100_000


class RepositoryCore(Generic[T]):
    """Binding, session scopes and input checks of a repository (see Repository)."""

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
        filterable: Iterable[str] | None = None,
        route: Route = "auto",
    ) -> None:
        info = model_info(model)
        check_route(route)
        if sum(x is not None for x in (db, session, unit)) != 1:
            msg = "Give a Repository exactly one of: a manager (db), session=, or unit=."
            raise ConfigurationError(msg)
        self.model = model
        self.db = db if db is not None else (unit.db if unit is not None else None)
        self._session = session
        self._unit = unit
        self._info = info
        self.table: Table = info.table
        self._soft = info.soft_delete
        #: Fields callers may filter and order by: ``filterable`` (an allow-list), else
        #: the model's ``__filterable__``, else every column but the audit-excluded secrets.
        self.filterable = filterable_fields(model, filterable)
        if not isinstance(audit, bool):
            msg = f"audit must be True or False (got a {type(audit).__name__})."
            raise ConfigurationError(msg)
        self._audit_flag = audit
        self._audited = audit and info.audited
        self._context_var: contextvars.ContextVar[AuditContext | None] | None = None
        self.cache = cache
        #: Where standalone reads run when the manager has replicas (docs/scaling.md).
        self.route: Route = route
        if max_page_size is None:
            max_page_size = self.db.settings.max_page_size if self.db else DEFAULT_MAX_PAGE_SIZE
        self.max_page_size = max_page_size
        self._codec: CursorCodec | None = None
        if cache is not None and self.db is not None:
            cache.attach(self.db)

    def __repr__(self) -> str:
        return f"<Repository {self.model.__name__}>"

    @property
    def _defaults(self) -> AuditContext | None:
        """The audit defaults :meth:`set_context` gave this task (None if none)."""
        var = self._context_var
        return None if var is None else var.get()

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

    async def _read(
        self, op: Callable[[AsyncSession], Awaitable[R]], *, fills_cache: bool = False
    ) -> R:
        session = self._bound_session()
        if session is not None:
            return await op(session)
        db = self.db
        assert db is not None
        # A shared cache is filled from the primary only: a replica may lag behind the
        # commit whose invalidation the cache has already seen.
        route: Route = "primary" if fills_cache else self.route
        replica_failures = 0
        primary_repeated = False
        while True:
            own = await db.read_session(route, autocommit=True) if db.router else None
            if own is None:
                own = db.autocommit_session()
            try:
                async with own:
                    return await op(own)
            except DatabaseUnavailableError as exc:
                # A read with no transaction is safe to repeat. On a replica (a pool
                # timeout is our own pool being busy, not the node failing) the node is
                # marked down and the read moves to the next replica, then the primary.
                if not isinstance(exc, PoolTimeoutError) and db.read_failed(own, exc):
                    replica_failures += 1
                    if replica_failures <= len(db.settings.replicas):
                        continue
                    raise
                # On the primary only once, when its connection broke: the pool has
                # dropped it and hands out a live one. A failed connect or a pool timeout
                # is not repeated, so the wait stays bounded by connect_timeout or
                # pool_timeout.
                if isinstance(exc, ConnectionLostError) and not primary_repeated:
                    primary_repeated = True
                    continue
                raise

    async def _write(self, op: Callable[[AsyncSession], Awaitable[R]]) -> R:
        return await self._write_scope(lambda session, own: op(session))

    async def _write_scope(self, op: Callable[[AsyncSession, bool], Awaitable[R]]) -> R:
        """``op(session, own)`` on the caller's bound session (``own`` False) or in a unit
        of work of its own (``own`` True: the transaction holds nothing else)."""
        session = self._bound_session()
        if session is not None:
            with recorded_by_caller(session.sync_session):
                return await op(session, False)
        assert self.db is not None
        async with AsyncUnitOfWork(self.db) as unit:
            # Each operation records the exact keys it changed (see _changed).
            with recorded_by_caller(unit.session.sync_session):
                return await op(unit.session, True)

    async def _write_atomic(self, op: Callable[[AsyncSession, bool], Awaitable[R]]) -> R:
        """Run a write of many statements all or nothing: ``op(session, own)``.

        In a caller's session or unit it runs inside a SAVEPOINT (see :meth:`_atomic`),
        so a failure undoes the call and keeps the caller's earlier work; ``own`` is
        False. Standalone it runs in a transaction of its own that holds nothing else:
        a failure rolls that transaction back, so no SAVEPOINT is needed, and ``op`` may
        roll it back and start again itself (``own`` is True).
        """

        async def atomic(session: AsyncSession, own: bool) -> R:
            if own:
                return await op(session, True)
            async with self._atomic(session):
                return await op(session, False)

        return await self._write_scope(atomic)

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
            try:
                await own.commit()
            except DatabaseUnavailableError as exc:
                # Behind pgbouncer (no autocommit) this sends a real COMMIT: the write
                # may have committed, so say so rather than let a caller run it again.
                raise commit_outcome_unknown(exc) from exc
            return result

    @contextlib.asynccontextmanager
    async def _atomic(self, session: AsyncSession) -> AsyncIterator[None]:
        """All or nothing inside an outer transaction: a SAVEPOINT around the call.

        Without savepoints (DuckDB) a failed statement aborts the whole outer transaction,
        which is all or nothing too, at a larger scale.
        """
        if not supports(session.get_bind().dialect.name, "savepoint"):
            yield
            return
        async with session.begin_nested():
            yield

    def _mark(self, session: AsyncSession, instance: object) -> None:
        mark_instance(session.sync_session, instance, self._defaults, self._audit_flag)

    def _audit_context(self, session: AsyncSession) -> AuditContext | None:
        """Who acts, for the audit rows a bulk operation writes; None when not audited."""
        if not self._audited:
            return None
        return resolve_context(session.sync_session, self._defaults)

    def _changed(self, session: AsyncSession, keys: Iterable[tuple[Any, ...]] | None) -> None:
        record_changes(session.sync_session, self.model, keys)

    def _coerce_id(self, ident: Any) -> Any:
        if len(self._info.pk_columns) > 1:
            if isinstance(ident, Mapping):
                return {k: ident[k] for k in self._info.pk_names}
            if isinstance(ident, (tuple, list)) and len(ident) == len(self._info.pk_columns):
                return tuple(ident)
            names = list(self._info.pk_names)
            msg = f"{self.model.__name__} has a composite key: pass a tuple of {names}."
            raise ValidationError(msg)
        if ident is None or isinstance(ident, (bool, Mapping, list, tuple, set)):
            msg = f"{self.model.__name__} ids are single values (got {type(ident).__name__})."
            raise ValidationError(msg)
        return self._info.value_checkers[self._info.pk_names[0]](ident)

    def _pk_where(self, ident: Any) -> Any:
        if len(self._info.pk_columns) == 1:
            return self._info.pk_columns[0] == ident
        values = ident.values() if isinstance(ident, Mapping) else ident
        return and_(*(c == v for c, v in zip(self._info.pk_columns, values, strict=False)))

    def _is_deleted(self, obj: Any) -> bool:
        return self._soft and getattr(obj, "deleted_at", None) is not None

    def _not_found(self, ident: Any) -> NotFoundError:
        msg = (
            f"No {self.model.__name__} with id {ident!r}. Check the id, "
            "or pass with_deleted=True for soft-deleted rows."
        )
        return NotFoundError(msg)

    async def _load_by_id(
        self, session: AsyncSession, ident: Any, *, for_update: bool = False
    ) -> T | None:
        """The one place every read by primary key passes (the cache hooks in here)."""
        if self.cache is not None and not for_update:
            cached: T | None = await self.cache.get_by_id(self, session, ident)
            return cached
        return await session.get(self.model, ident, with_for_update=for_update or None)

    def _standalone_plain(self) -> tuple[PlainLoader, AsyncEngine] | None:
        """For a standalone read that may skip the ORM (see :mod:`._plain_load`): the
        model's loader and the engine to read on; None when the read needs a session
        (a caller's session or unit, a model the ORM must load, a listener that would
        see the load, replicas, a bound manager)."""
        db = self.db
        if db is None or self._bound_session() is not None:
            return None  # checked first: a read inside a unit needs no verdict
        loader = plain_loader(self._info.mapper)
        if loader is None or not loader.usable():
            return None
        engine = db.standalone_read_engine()
        return None if engine is None else (loader, engine)

    async def _run_plain(
        self, engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[R]]
    ) -> R:
        """``work`` on a pooled connection of ``engine`` (no session), raising asyncdb
        errors; repeated once when the connection broke, as :meth:`_read` does."""
        repeated = False
        while True:
            try:
                async with engine.connect() as conn:
                    return await work(conn)
            except Exception as exc:
                mapped = translated_error(exc)
                if isinstance(mapped, ConnectionLostError) and not repeated:
                    repeated = True
                    continue
                if mapped is exc:
                    raise
                raise mapped from exc

    async def _plain_rows(
        self,
        plain: tuple[PlainLoader, AsyncEngine],
        stmt: Select[Any],
        params: Mapping[str, Any] | None = None,
    ) -> list[T]:
        """The instances of a Core ``stmt`` over the loader's columns (no session)."""
        loader, engine = plain

        async def work(conn: AsyncConnection) -> Sequence[Any]:
            rows: Sequence[Any] = (await conn.execute(stmt, params)).all()
            return rows

        return loader.instances(await self._run_plain(engine, work))

    async def _plain_by_id(
        self, plain: tuple[PlainLoader, AsyncEngine], ident: Any, with_deleted: bool
    ) -> T | None:
        """:meth:`_select_by_id` without a session: one Core statement, the instance
        built from its row (detached, as the ORM path leaves it)."""
        loader, engine = plain
        stmt = self._plain_kept(
            loader.by_id,
            with_deleted,
            True,
            lambda: self._by_id_where(loader.select(), with_deleted),
        )
        params = self._pk_params(ident)

        async def work(conn: AsyncConnection) -> Any:
            return (await conn.execute(stmt, params)).first()

        row = await self._run_plain(engine, work)
        return None if row is None else loader.instance(row)

    def _plain_page_statements(
        self,
        loader: PlainLoader,
        filters: Mapping[str, Any],
        with_deleted: bool,
        where: Where,
        order_by: str | Sequence[str] | None,
    ) -> tuple[Select[Any], Select[Any]]:
        """The count and the Core page statement of a plain :meth:`paginate` (its limit
        and offset bound as ``PAGE_LIMIT``/``PAGE_OFFSET``). Without filters they are
        built once per model, ``with_deleted`` and ordering: building and keying them
        cost a third of a page's Python time."""
        check_flag("with_deleted", with_deleted)  # before the look-up: 1 == True
        order = parse_order_with_key(self.model, order_by, self._info.pk_names, self.filterable)

        def build() -> tuple[Select[Any], Select[Any]]:
            conditions = self._where(filters, with_deleted, where)
            count_stmt = select(func.count()).select_from(self.table).where(*conditions)
            rows_stmt = self._plain_ordered(loader, conditions, order).offset(
                bindparam(PAGE_OFFSET, type_=BigInteger)
            )
            return count_stmt, rows_stmt

        keyed = not filters and where is None
        return self._plain_kept(loader.pages, (with_deleted, tuple(order)), keyed, build)

    def _plain_keyset_statement(
        self,
        loader: PlainLoader,
        filters: Mapping[str, Any],
        with_deleted: bool,
        where: Where,
        order: list[tuple[str, bool]],
        values: Sequence[Any] | None,
    ) -> tuple[Select[Any], dict[str, Any]]:
        """The Core statement of a plain :meth:`paginate_keyset` page and its parameters
        (the cursor's values bound; the limit bound as ``PAGE_LIMIT``, not given here).

        Its shape depends on the ordering and on which cursor values are NULL, not on
        the values: without filters it is built once per model, ``with_deleted``,
        ordering and NULL pattern (at most ``_MAX_PAGE_FORMS`` of them)."""
        check_flag("with_deleted", with_deleted)
        params: dict[str, Any] = {}
        bound: list[Any] | None = None
        if values is not None:
            types = self._info.attr_to_column
            bound = []
            for i, ((field, _), value) in enumerate(zip(order, values, strict=True)):
                if value is None:
                    bound.append(None)  # NULL chooses the condition's shape
                else:
                    bound.append(bindparam(f"asyncdb_after_{i}", type_=types[field].type))
                    params[f"asyncdb_after_{i}"] = value
        key = (
            with_deleted,
            tuple(order),
            None if values is None else tuple(v is None for v in values),
        )

        def build() -> Select[Any]:
            conditions = self._where(filters, with_deleted, where)
            if bound is not None:
                conditions.append(keyset_after(self.model, order, bound))
            return self._plain_ordered(loader, conditions, order)

        keyed = not filters and where is None
        return self._plain_kept(loader.keysets, key, keyed, build), params

    def _plain_ordered(
        self, loader: PlainLoader, conditions: list[Any], order: list[tuple[str, bool]]
    ) -> Select[Any]:
        """The loader's columns where ``conditions``, in ``order``, ``PAGE_LIMIT`` rows
        (BIGINT, as the offset: one past 2**31 is an empty page, not a refused value)."""
        return (
            loader.select()
            .where(*conditions)
            .order_by(*build_order(self.model, order))
            .limit(bindparam(PAGE_LIMIT, type_=BigInteger))
        )

    def _plain_kept(self, store: dict[Any, S], key: Any, keyed: bool, build: Callable[[], S]) -> S:
        """``build()``, kept in ``store`` under ``key`` when ``keyed`` (no filters, so
        the statement depends on the key alone); at most ``_MAX_PAGE_FORMS`` forms per
        store, since callers choose orderings."""
        if keyed and key in store:
            return store[key]
        built = build()
        if keyed and len(store) < _MAX_PAGE_FORMS:
            store[key] = built
        return built

    def _by_id_where(self, stmt: Select[Any], with_deleted: bool) -> Select[Any]:
        columns = self._info.pk_columns
        stmt = stmt.where(
            *(c == bindparam(_PK_PARAM.format(i), type_=c.type) for i, c in enumerate(columns))
        )
        if self._soft and not with_deleted:
            stmt = stmt.where(self.model.deleted_at.is_(None))  # type: ignore[attr-defined]
        return stmt

    def _pk_params(self, ident: Any) -> dict[str, Any]:
        if len(self._info.pk_columns) == 1:
            return {"asyncdb_pk_0": ident}
        values = ident.values() if isinstance(ident, Mapping) else ident
        return {_PK_PARAM.format(i): v for i, v in enumerate(values)}

    async def _select_by_id(
        self, session: AsyncSession, ident: Any, with_deleted: bool
    ) -> T | None:
        """The row ``ident`` through a statement built once per model, not ``Session.get``.

        For a session of the call's own only (a standalone read): its identity map is
        empty, so ``Session.get``'s look-up there, its per-call statement and cache key
        buy nothing; a soft-deleted row is filtered out in SQL. The ORM still loads the
        instance (events, eager loaders, inheritance as for ``Session.get``).
        """
        built = _BY_ID.get(self.model)
        if built is None:
            built = _BY_ID.setdefault(self.model, {})
        stmt = built.get(with_deleted)
        if stmt is None:
            stmt = self._by_id_where(select(self.model), with_deleted)
            built[with_deleted] = stmt
        params = self._pk_params(ident)
        found: T | None = (await session.execute(stmt, params)).unique().scalar_one_or_none()
        return found

    def _check_values(self, values: Mapping[str, Any], *, row: int | None = None) -> dict[str, Any]:
        """``values`` with known field names and each value checked against its column."""
        try:
            check_columns(self.model, values)
        except ValidationError as exc:
            if row is None:
                raise
            raise ValidationError(f"Row {row}: {exc}") from None
        return coerce_values(self._info.value_checkers, values, row=row)

    def _check_update(self, values: Mapping[str, Any]) -> dict[str, Any]:
        checked = self._check_values(values)
        for name in self._info.pk_names:
            if name in values:
                msg = (
                    f"update() cannot change the primary key {name!r} of {self.model.__name__}. "
                    "Pass the id positionally (update(7, name=...)); to change a key, create "
                    "a new row and delete the old one."
                )
                raise ValidationError(msg)
        return checked

    def _one_statement_audit(self) -> bool:
        """Whether an audited create can write its audit row in the same statement."""
        session = self._bound_session()
        if session is not None:
            dialect = session.get_bind().dialect.name
        else:
            assert self.db is not None
            dialect = self.db.backend
        return dialect == "postgresql" and eligible(self._info)

    def _fast_path(self) -> bool:
        # One UPDATE ... RETURNING instead of SELECT + UPDATE, when no old values are
        # needed for the audit log.
        return not self._audited

    def _resolve_soft(self, soft: bool | None) -> bool:
        if soft is None:
            return self._soft
        check_flag("soft", soft)
        if soft and not self._soft:
            msg = (
                f"{self.model.__name__} has no deleted_at column, so it cannot be soft-deleted. "
                "Add SoftDeleteMixin to the model, or delete with soft=False."
            )
            raise ValidationError(msg)
        return bool(soft)

    def _where(
        self, filters: Mapping[str, Any], with_deleted: bool, where: Where = None
    ) -> list[Any]:
        check_flag("with_deleted", with_deleted)
        conditions = where_conditions(self.model, where)
        conditions += build_conditions(self.model, filters, self.filterable)
        if self._soft and not with_deleted:
            conditions.append(self.model.deleted_at.is_(None))  # type: ignore[attr-defined]
        return conditions

    def _select(self, annotate: Annotate) -> Select[Any]:
        """``SELECT model`` plus one labelled column per annotation (checked here)."""
        return select(self.model, *annotation_columns(self.model, annotate, self.filterable))

    async def _fetch(self, session: AsyncSession, stmt: Select[Any], annotate: Annotate) -> list[T]:
        """The instances ``stmt`` selects, with their annotations set as attributes."""
        if not annotate:
            return list((await session.scalars(stmt)).unique().all())
        names = list(annotate)
        found: list[T] = []
        for row in (await session.execute(stmt)).unique().all():
            obj = row[0]
            for name, value in zip(names, row[1:], strict=True):
                setattr(obj, name, value)
            found.append(obj)
        return found

    async def _read_rows(self, stmt: Select[Any], annotate: Annotate) -> list[T]:
        async def op(session: AsyncSession) -> list[T]:
            return await self._fetch(session, stmt, annotate)

        return await self._read(op)

    def _with_load(self, stmt: Select[Any], load: LoadArg, with_deleted: bool) -> Select[Any]:
        """``stmt`` with the eager-load options of ``load`` (see :mod:`._loading`)."""
        if load is None:
            return stmt
        stmt = stmt.options(*loader_options(self.model, load, with_deleted))
        if self._bound_session() is None:
            # A standalone read runs in a session of its own, empty: nothing to refresh
            # (and refreshing every row again costs about a tenth of a list page's CPU).
            return stmt
        # Refresh what the session already holds: a collection loaded before a related
        # row was soft-deleted must not keep it.
        return stmt.execution_options(populate_existing=True)

    def _ordered(self, stmt: Select[Any], order_by: str | Sequence[str] | None) -> Select[Any]:
        order = parse_order_with_key(self.model, order_by, self._info.pk_names, self.filterable)
        return stmt.order_by(*build_order(self.model, order))

    async def _cached_query(
        self,
        kind: str,
        filters: Mapping[str, Any],
        with_deleted: bool,
        op: Callable[[AsyncSession], Awaitable[R]],
        *,
        keyable: bool = True,
    ) -> R:
        cache = self.cache
        if cache is None or not keyable or has_relation_filters(self.model, filters):
            # A count through a relationship depends on other tables, whose commits do
            # not invalidate this model's counts; an expression has no trustworthy key:
            # neither is cached.
            return await self._read(op)
        if self._bound_session() is None:
            found, value = await cache.peek_query(self, kind, filters, with_deleted)
            if found:
                return value  # type: ignore[no-any-return]

        async def cached(session: AsyncSession) -> R:
            result: R = await cache.query(self, session, kind, filters, with_deleted, op)
            return result

        return await self._read(cached, fills_cache=True)

    def _cursor_codec(self) -> CursorCodec:
        if self._codec is None:
            settings = self.db.settings if self.db is not None else None
            self._codec = codec_for_secrets(
                settings.cursor_secret if settings is not None else cursor_secret_from_env()
            )
        return self._codec

    @staticmethod
    def _check_batch(batch_size: int) -> None:
        check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
