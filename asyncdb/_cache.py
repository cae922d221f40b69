"""Repository cache: rows by primary key (and counts), invalidated when writes commit.

::

    cache = RepositoryCache(ttl=60.0, max_entries=10_000)
    users = Repository(User, db, cache=cache)
    await users.get_by_id(7)  # a miss: read from the database, stored
    await users.get_by_id(7)  # a hit: no connection is checked out

What is cached are column values, never ORM instances: every hit builds a fresh
instance, detached for a standalone call or attached to the caller's session, so two
sessions never share an object and mutating one touches neither the cache nor anybody
else's copy. ``count`` and ``exists`` results are cached too, keyed by their filters.

Correctness rules, in the order they matter:

* **Invalidation at commit, never before.** Every write path records the rows it changed
  (:mod:`asyncdb._changes`); the manager hands them over once the outermost transaction
  has committed, and the cache drops those rows then, synchronously, before ``commit()``
  returns to the writer. A rollback changes nothing. A write whose rows are unknown
  (``session.execute(update(User))``) drops every row of the model, and any write to a
  model drops its cached counts.
* **No stale store after an invalidation.** A reader that missed captures a token
  before reading the database and stores the row only if no invalidation of that row
  (or of its whole model) happened since; otherwise a slow reader could put back the
  value a writer just replaced.
* **Only fresh, committed reads fill the cache.** Inside a transaction the cache is
  used only when each statement sees the latest committed data (PostgreSQL READ
  COMMITTED; an SQLite write transaction, which holds the write lock) and the
  transaction has not written the model yet; otherwise reads go to the database and
  nothing is stored. So no other task can read an uncommitted value from the cache, and
  a REPEATABLE READ or SERIALIZABLE unit keeps its snapshot.

A :class:`CacheBackend` stores the values; :class:`MemoryCacheBackend` (an LRU with a TTL,
in this process) is the default, and the Protocol has the shape a shared store such as
Redis needs (async reads and conditional writes, invalidation called during the commit).
One cache serves one manager (one database) and one event loop.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import inspect
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.util import greenlet_spawn

from ._cache_backend import (
    DEFAULT_CACHE_MAX_ENTRIES,
    DEFAULT_CACHE_TTL,
    CacheBackend,
    MemoryCacheBackend,
    _copy,
)
from ._changes import Changes, add_commit_listener, changed_in_transaction
from ._engine import AUTOCOMMIT_OPTION, READ_ONLY_OPTION
from ._errors import ConfigurationError
from ._manager import ManagerState
from ._model_info import model_info
from ._session import find_session_state, session_state

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from ._manager import AsyncDatabaseManager

__all__ = [
    "DEFAULT_CACHE_MAX_ENTRIES",
    "DEFAULT_CACHE_TTL",
    "CacheBackend",
    "MemoryCacheBackend",
    "RepositoryCache",
    "cache_stats",
]

#: Per manager: the caches attached to it (for the figures in ``db.metrics``).
_CACHES: weakref.WeakKeyDictionary[AsyncDatabaseManager, list[RepositoryCache]] = (
    weakref.WeakKeyDictionary()
)
_QUERY_SUFFIX = "#query"
_FRESH_LEVELS = frozenset({"AUTOCOMMIT", "READ COMMITTED", "READ UNCOMMITTED"})
# -- per-model facts -----------------------------------------------------------------------


class _Bound(Protocol):
    """What the cache reads from a repository: the model it serves."""

    @property
    def model(self) -> type[Any]: ...


class _Model:
    """What the cache needs to know about one mapped class, computed once."""

    __slots__ = (
        "cacheable",
        "keys",
        "mapper",
        "model",
        "namespace",
        "new_instance",
        "pk_names",
        "query_namespace",
        "tables",
    )

    def __init__(self, model: type[Any]) -> None:
        facts = model_info(model)
        manager = facts.mapper.class_manager
        self.model = model
        self.mapper = facts.mapper
        self.namespace = facts.namespace
        self.query_namespace = self.namespace + _QUERY_SUFFIX
        self.keys = facts.column_order
        self.pk_names = facts.pk_names
        self.tables = frozenset(facts.mapper.tables)
        self.new_instance = manager.new_instance
        # Instances built from cached values fire no "load" event; a model that needs
        # one (sqlalchemy.ext.mutable, user hooks) is read from the database instead.
        self.cacheable = not (manager.dispatch.load or manager.dispatch.refresh)

    def pk_of(self, ident: Any) -> tuple[Any, ...]:
        if isinstance(ident, tuple):
            return ident
        if isinstance(ident, Mapping):
            return tuple(ident[name] for name in self.pk_names)
        return (ident,)

    def values_of(self, obj: Any) -> dict[str, Any] | None:
        """The column values of a freshly loaded instance; None if it cannot be cached."""
        if type(obj) is not self.model:
            return None  # a polymorphic load returned a subclass
        loaded = instance_state(obj).dict
        try:
            return {key: _copy(loaded[key]) for key in self.keys}
        except KeyError:
            return None  # a deferred or expired column: never build a half-loaded row

    def build(self, values: Mapping[str, Any], pk: tuple[Any, ...]) -> Any:
        """A detached instance that looks loaded: column values set, no history."""
        obj = self.new_instance()
        state = instance_state(obj)
        state.dict.update({key: _copy(value) for key, value in values.items()})
        # What make_transient_to_detached does, without marking the relationships
        # expired: they stay unloaded, as after a real load.
        state.key = self.mapper.identity_key_from_primary_key(pk)
        return obj


def _freeze(value: Any) -> Hashable:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(_freeze(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    hash(value)  # TypeError for anything else unhashable: not cached
    return value  # type: ignore[no-any-return]


# -- the cache -----------------------------------------------------------------------------


class RepositoryCache:
    """A cache for :class:`~asyncdb.Repository` reads by id, ``count`` and ``exists``.

    ::

        cache = RepositoryCache(ttl=60.0, max_entries=50_000)
        users = Repository(User, db, cache=cache)
        orders = Repository(Order, db, cache=cache)  # one cache may serve many models

    ``ttl`` bounds how long a value lives (None: until evicted or invalidated);
    ``max_entries`` bounds the in-process backend. Pass ``backend=`` to store elsewhere
    (then ``max_entries`` is the backend's business). ``clock`` is for tests.
    Figures: :meth:`stats`; summed over a manager's caches by :func:`cache_stats`.
    """

    def __init__(
        self,
        *,
        ttl: float | None = DEFAULT_CACHE_TTL,
        max_entries: int | None = None,
        backend: CacheBackend | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0
        ):
            msg = f"ttl must be a positive number of seconds, or None (got {ttl!r})."
            raise ConfigurationError(msg)
        if backend is not None and (max_entries is not None or clock is not None):
            msg = "Pass max_entries and clock to the backend, not to RepositoryCache(backend=...)."
            raise ConfigurationError(msg)
        self.ttl = None if ttl is None else float(ttl)
        if backend is None:
            backend = MemoryCacheBackend(
                max_entries=DEFAULT_CACHE_MAX_ENTRIES if max_entries is None else max_entries,
                clock=clock,
            )
        self.backend: CacheBackend = backend
        self._db: AsyncDatabaseManager | None = None
        self._models: dict[type[Any], _Model] = {}
        self._affected: dict[type[Any], tuple[_Model, ...]] = {}
        self.hits = 0
        self.misses = 0
        self.bypasses = 0
        self.stores = 0
        self.stale_stores_refused = 0
        self.invalidations = 0

    def __repr__(self) -> str:
        return f"<RepositoryCache ttl={self.ttl} hits={self.hits} misses={self.misses}>"

    # -- wiring ----------------------------------------------------------------------

    def attach(self, db: AsyncDatabaseManager) -> None:
        """Hear of ``db``'s commits (the repository calls this; repeating it is a no-op)."""
        if self._db is db:
            return
        if self._db is not None:
            msg = (
                "This RepositoryCache already serves another database manager. "
                "Create one cache per manager."
            )
            raise ConfigurationError(msg)
        self._db = db
        add_commit_listener(db, self._on_commit)
        _CACHES.setdefault(db, []).append(self)
        db.metrics.add_section("cache", lambda: cache_stats(db))

    def _model(self, model: type[Any]) -> _Model:
        info = self._models.get(model)
        if info is None:
            info = self._models[model] = _Model(model)
            self._affected.clear()
        return info

    def _models_touched_by(self, model: type[Any]) -> tuple[_Model, ...]:
        """Cached models sharing a table with ``model`` (inheritance maps several)."""
        found = self._affected.get(model)
        if found is None:
            try:
                tables = frozenset(inspect(model).tables)
            except Exception:
                tables = frozenset()
            found = tuple(m for m in self._models.values() if m.tables & tables)
            self._affected[model] = found
        return found

    def _on_commit(self, changes: Changes) -> None:
        for model, keys in changes.items():
            for info in self._models_touched_by(model):
                self.backend.invalidate(info.query_namespace, None)
                if keys is None:
                    self.backend.invalidate(info.namespace, None)
                    self.invalidations += 1
                else:
                    self.backend.invalidate(info.namespace, keys)
                    self.invalidations += len(keys)

    # -- control ---------------------------------------------------------------------

    async def invalidate(self, model: type[Any], ids: Iterable[Any] | None = None) -> None:
        """Drop cached rows of ``model`` (``ids``; every row when None) and its counts.

        For writes the toolkit cannot see: text SQL, another program, a trigger.
        """
        info = self._model(model)
        keys = None if ids is None else {info.pk_of(i) for i in ids}
        # In a greenlet, as during a commit, where a network backend may block.
        await greenlet_spawn(self._on_commit, {model: keys})

    async def clear(self) -> None:
        """Drop everything this cache holds."""
        await greenlet_spawn(self.backend.clear)

    def stats(self) -> dict[str, Any]:
        """Counters and the backend's figures, as a plain dict."""
        lookups = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / lookups, 4) if lookups else None,
            "bypasses": self.bypasses,
            "stores": self.stores,
            "stale_stores_refused": self.stale_stores_refused,
            "invalidations": self.invalidations,
            **self.backend.stats(),
        }

    def reset_stats(self) -> None:
        """Zero the counters (the cached values stay)."""
        self.hits = self.misses = self.bypasses = 0
        self.stores = self.stale_stores_refused = self.invalidations = 0

    # -- may this session use the cache? ---------------------------------------------

    def _serving(self) -> bool:
        # After dispose() a call must fail as it would without the cache (StateError).
        return self._db is not None and self._db.state is ManagerState.CONNECTED

    async def _usable(self, info: _Model, session: AsyncSession) -> bool:
        if not info.cacheable:
            return False
        sync = session.sync_session
        state = find_session_state(sync)
        manager = state.manager if state is not None else None
        if manager is None:
            return False  # not a toolkit session: its commits are never published
        if state is not None and state.node is not None:
            return False  # a replica may lag behind an invalidation already seen
        if manager is not self._db:
            if self._db is not None:
                return False
            self.attach(manager)
        if self._written(info, sync):
            return False
        return await _reads_are_fresh(session, info.mapper)

    def _written(self, info: _Model, sync: Session) -> bool:
        """Has this transaction changed (or is about to flush) rows of the model?"""
        changed = changed_in_transaction(sync)
        if changed and any(info in self._models_touched_by(m) for m in changed):
            return True
        for group in (sync.new, sync.deleted, sync.dirty):
            if any(info in self._models_touched_by(type(obj)) for obj in group):
                return True
        return False

    # -- reads by id -----------------------------------------------------------------

    async def get_detached(self, repo: _Bound, ident: Any) -> Any:
        """A detached instance from the cache, or None on a miss (no I/O either way).

        For calls outside any session; a miss is counted when the caller then reads
        through :meth:`get_by_id`.
        """
        info = self._model(repo.model)
        if not info.cacheable or not self._serving():
            return None
        pk = info.pk_of(ident)
        values = await self.backend.get(info.namespace, pk)
        if values is None:
            return None
        self.hits += 1
        return info.build(values, pk)

    async def get_by_id(self, repo: _Bound, session: AsyncSession, ident: Any) -> Any:
        """The instance for ``ident`` in ``session``: from the session, the cache, or the
        database (then stored, when that is safe)."""
        info = self._model(repo.model)
        pk = info.pk_of(ident)
        sync = session.sync_session
        if info.mapper.identity_key_from_primary_key(pk) in sync.identity_map:
            return await session.get(repo.model, ident)  # the session's own copy wins
        if not await self._usable(info, session):
            self.bypasses += 1
            return await session.get(repo.model, ident)
        values = await self.backend.get(info.namespace, pk)
        if values is not None:
            self.hits += 1
            obj = info.build(values, pk)
            sync.add(obj)
            return obj
        self.misses += 1
        token = await self.backend.begin_load(info.namespace, pk)
        try:
            obj = await session.get(repo.model, ident)
            if obj is not None:
                loaded = info.values_of(obj)
                if loaded is not None:
                    await self._store(info.namespace, pk, loaded, token)
            return obj
        finally:
            self.backend.end_load(info.namespace, pk, token)

    async def _store(
        self, namespace: str, key: Hashable, values: Mapping[str, Any], token: object
    ) -> None:
        if await self.backend.store(namespace, key, values, token, self.ttl):
            self.stores += 1
        else:
            self.stale_stores_refused += 1

    # -- counts ----------------------------------------------------------------------

    @staticmethod
    def _query_key(kind: str, filters: Mapping[str, Any], with_deleted: bool) -> Hashable | None:
        try:
            return (kind, with_deleted, _freeze(filters))
        except TypeError:
            return None

    async def peek_query(
        self, repo: _Bound, kind: str, filters: Mapping[str, Any], with_deleted: bool
    ) -> tuple[bool, Any]:
        """``(True, value)`` for a cached ``count``/``exists`` result, else ``(False, None)``."""
        info = self._model(repo.model)
        key = self._query_key(kind, filters, with_deleted)
        if key is None or not info.cacheable or not self._serving():
            return False, None
        found = await self.backend.get(info.query_namespace, key)
        if found is None:
            return False, None
        self.hits += 1
        return True, found["value"]

    async def query(
        self,
        repo: _Bound,
        session: AsyncSession,
        kind: str,
        filters: Mapping[str, Any],
        with_deleted: bool,
        load: Callable[[AsyncSession], Awaitable[Any]],
    ) -> Any:
        """A ``count``/``exists`` result: cached, or ``await load(session)`` then stored."""
        info = self._model(repo.model)
        key = self._query_key(kind, filters, with_deleted)
        if key is None or not await self._usable(info, session):
            self.bypasses += 1
            return await load(session)
        namespace = info.query_namespace
        found = await self.backend.get(namespace, key)
        if found is not None:
            self.hits += 1
            return found["value"]
        self.misses += 1
        token = await self.backend.begin_load(namespace, key)
        try:
            value = await load(session)
            await self._store(namespace, key, {"value": value}, token)
            return value
        finally:
            self.backend.end_load(namespace, key, token)


async def _reads_are_fresh(session: AsyncSession, mapper: Mapper[Any]) -> bool:
    """Does each statement of this session see the latest committed data?

    True without a transaction (autocommit reads), for PostgreSQL READ COMMITTED and for
    an SQLite write transaction (``BEGIN IMMEDIATE`` holds the write lock, so nothing
    commits under it). False for snapshots (REPEATABLE READ, SERIALIZABLE, an SQLite
    read-only transaction): their reads may predate a commit the cache already saw.
    """
    sync = session.sync_session
    bind = sync.get_bind(mapper)
    dialect = bind.dialect
    if not sync.in_transaction():
        return _fresh(bind.get_execution_options(), dialect)
    transaction = sync.get_transaction()
    state = session_state(sync)
    known = state.fresh
    if known is not None and known[0] is transaction:
        return bool(known[1])
    connection = (await session.connection()).sync_connection
    assert connection is not None
    fresh = _fresh(connection.get_execution_options(), dialect)
    state.fresh = (transaction, fresh)
    return fresh


def _fresh(options: Mapping[str, Any], dialect: Any) -> bool:
    if dialect.name == "sqlite":
        return bool(options.get(AUTOCOMMIT_OPTION)) or not options.get(READ_ONLY_OPTION)
    if dialect.name == "duckdb":
        # Snapshot isolation with optimistic writers: others commit under a transaction,
        # so only a one-statement read is fresh.
        return bool(options.get(AUTOCOMMIT_OPTION))
    level = options.get("isolation_level") or dialect.default_isolation_level
    if dialect.name in ("postgresql", "mysql", "mariadb"):
        return str(level or "READ COMMITTED").upper() in _FRESH_LEVELS
    return str(level).upper() == "AUTOCOMMIT"


def cache_stats(db: AsyncDatabaseManager) -> dict[str, Any]:
    """The figures of every cache attached to ``db``, summed."""
    caches = _CACHES.get(db, [])
    total: dict[str, Any] = {"caches": len(caches)}
    for cache in caches:
        for name, value in cache.stats().items():
            if isinstance(value, int) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value
    lookups = total.get("hits", 0) + total.get("misses", 0)
    total["hit_rate"] = round(total["hits"] / lookups, 4) if lookups else None
    return total
