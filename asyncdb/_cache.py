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

import collections
import copy
import datetime as dt
import decimal
import enum
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sqlalchemy import inspect
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.util import greenlet_spawn

from ._changes import Changes, add_commit_listener, changed_in_transaction
from ._engine import AUTOCOMMIT_OPTION, READ_ONLY_OPTION
from ._errors import ConfigurationError
from ._manager import ManagerState

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

    from ._manager import AsyncDatabaseManager
    from ._repository import Repository

__all__ = [
    "DEFAULT_CACHE_MAX_ENTRIES",
    "DEFAULT_CACHE_TTL",
    "CacheBackend",
    "MemoryCacheBackend",
    "RepositoryCache",
    "cache_stats",
]

#: Seconds a cached row lives at most (a bound on staleness from writes the toolkit
#: cannot see, such as another program's SQL).
DEFAULT_CACHE_TTL = 300.0
#: Rows (and counts) the in-process backend holds at most.
DEFAULT_CACHE_MAX_ENTRIES = 10_000

#: Key of the manager extension that lists the caches attached to it.
CACHES_KEY = "asyncdb_caches"
#: Key of the manager extension returning the cache figures for ``db.metrics``.
STATS_KEY = "asyncdb_cache_stats"
_FRESH_KEY = "asyncdb_cache_fresh"
_QUERY_SUFFIX = "#query"
_FRESH_LEVELS = frozenset({"AUTOCOMMIT", "READ COMMITTED", "READ UNCOMMITTED"})
# Values handed out as they are; anything else is deep-copied on the way in and out.
_IMMUTABLE: frozenset[type] = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        str,
        bytes,
        decimal.Decimal,
        dt.datetime,
        dt.date,
        dt.time,
        dt.timedelta,
        uuid.UUID,
    }
)


def _copy(value: Any) -> Any:
    if type(value) in _IMMUTABLE or isinstance(value, enum.Enum):
        return value
    return copy.deepcopy(value)


# -- backends ----------------------------------------------------------------------------


@runtime_checkable
class CacheBackend(Protocol):
    """Where a :class:`RepositoryCache` keeps values: dicts under ``(namespace, key)``.

    ``namespace`` names a model (or its counts), ``key`` is a primary-key tuple (or a
    frozen filter set). Reads and writes are async so that a network store fits.
    ``invalidate`` and ``clear`` are plain methods called inside a SQLAlchemy greenlet
    (``invalidate`` during the commit, before ``commit()`` returns): they must finish
    there, and a network store can block on its client with ``sqlalchemy.util.await_only``.

    The contract that keeps readers from storing stale rows: ``begin_load`` returns a
    token before the caller reads the database; ``store`` with that token must do
    nothing if ``invalidate`` touched the key (or its whole namespace) in between;
    ``end_load`` always follows ``begin_load``.
    """

    async def get(self, namespace: str, key: Hashable) -> Mapping[str, Any] | None:
        """The values stored under the key, or None (missing or expired)."""
        ...

    async def begin_load(self, namespace: str, key: Hashable) -> object:
        """A token for a database read of the key that starts now."""
        ...

    async def store(
        self,
        namespace: str,
        key: Hashable,
        values: Mapping[str, Any],
        token: object,
        ttl: float | None,
    ) -> bool:
        """Store ``values`` unless the key was invalidated since ``token``; True if stored."""
        ...

    def end_load(self, namespace: str, key: Hashable, token: object) -> None:
        """The read that took ``token`` is over (stored or not)."""
        ...

    def invalidate(self, namespace: str, keys: Iterable[Hashable] | None) -> None:
        """Drop the keys, or every key of the namespace when ``keys`` is None."""
        ...

    def clear(self) -> None:
        """Drop everything."""
        ...

    def stats(self) -> dict[str, Any]:
        """Figures of the store itself (``size``, ``evictions``, ...)."""
        ...


class _Entry:
    __slots__ = ("epoch", "expires", "values")

    def __init__(self, values: Mapping[str, Any], expires: float | None, epoch: int) -> None:
        self.values = values
        self.expires = expires
        self.epoch = epoch


class _Load:
    """Database reads of one key in progress; ``valid`` turns False on invalidation."""

    __slots__ = ("epoch", "readers", "valid")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.readers = 0
        self.valid = True


class MemoryCacheBackend:
    """An in-process LRU with a time to live: constant memory, no I/O.

    At most ``max_entries`` values are kept; the least recently used goes first.
    Expired entries are dropped when they are next read (or pushed out by the LRU).
    A whole-namespace invalidation bumps the namespace's epoch: older entries are
    dropped lazily, so it costs O(1) whatever the size.

    ``clock`` (seconds, monotonic) is injectable for tests.
    """

    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_CACHE_MAX_ENTRIES,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            msg = f"max_entries must be an integer of at least 1 (got {max_entries!r})."
            raise ConfigurationError(msg)
        self.max_entries = max_entries
        self._clock = clock or time.monotonic
        self._entries: collections.OrderedDict[tuple[str, Hashable], _Entry] = (
            collections.OrderedDict()
        )
        self._loads: dict[tuple[str, Hashable], _Load] = {}
        self._epochs: dict[str, int] = {}
        self.evictions = 0
        self.expirations = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, namespace: str, key: Hashable) -> Mapping[str, Any] | None:
        """The stored values, or None (missing, expired or invalidated)."""
        full = (namespace, key)
        entry = self._entries.get(full)
        if entry is None:
            return None
        if entry.epoch != self._epochs.get(namespace, 0):
            del self._entries[full]
            return None
        if entry.expires is not None and entry.expires <= self._clock():
            del self._entries[full]
            self.expirations += 1
            return None
        self._entries.move_to_end(full)
        return entry.values

    async def begin_load(self, namespace: str, key: Hashable) -> object:
        """A token valid until the key or its namespace is invalidated."""
        full = (namespace, key)
        epoch = self._epochs.get(namespace, 0)
        load = self._loads.get(full)
        if load is None or load.epoch != epoch:
            load = self._loads[full] = _Load(epoch)
        load.readers += 1
        return load

    async def store(
        self,
        namespace: str,
        key: Hashable,
        values: Mapping[str, Any],
        token: object,
        ttl: float | None,
    ) -> bool:
        """Store unless invalidated since ``token``; the LRU drops the oldest beyond the bound."""
        assert isinstance(token, _Load)
        if not token.valid or token.epoch != self._epochs.get(namespace, 0):
            return False
        full = (namespace, key)
        expires = None if ttl is None else self._clock() + ttl
        self._entries[full] = _Entry(values, expires, token.epoch)
        self._entries.move_to_end(full)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1
        return True

    def end_load(self, namespace: str, key: Hashable, token: object) -> None:
        """Forget the read once no reader of the key is left."""
        assert isinstance(token, _Load)
        token.readers -= 1
        full = (namespace, key)
        if token.readers <= 0 and self._loads.get(full) is token:
            del self._loads[full]

    def invalidate(self, namespace: str, keys: Iterable[Hashable] | None) -> None:
        """Drop keys (and spoil reads of them in progress), or the whole namespace."""
        if keys is None:
            self._epochs[namespace] = self._epochs.get(namespace, 0) + 1
            return
        for key in keys:
            full = (namespace, key)
            self._entries.pop(full, None)
            load = self._loads.pop(full, None)
            if load is not None:
                load.valid = False

    def clear(self) -> None:
        """Drop every entry and spoil every read in progress."""
        self._entries.clear()
        for load in self._loads.values():
            load.valid = False
        self._loads.clear()

    def stats(self) -> dict[str, Any]:
        """``size``, ``max_entries``, ``evictions`` (LRU) and ``expirations`` (TTL)."""
        return {
            "size": len(self._entries),
            "max_entries": self.max_entries,
            "evictions": self.evictions,
            "expirations": self.expirations,
        }


# -- per-model facts -----------------------------------------------------------------------


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
        mapper: Mapper[Any] = inspect(model)
        manager = mapper.class_manager
        self.model = model
        self.mapper = mapper
        self.namespace = f"{model.__module__}.{model.__qualname__}"
        self.query_namespace = self.namespace + _QUERY_SUFFIX
        self.keys = tuple(prop.key for prop in mapper.column_attrs)
        self.pk_names = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
        self.tables = frozenset(mapper.tables)
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
        add_commit_listener(db.extensions, self._on_commit)
        caches: list[RepositoryCache] = db.extensions.setdefault(CACHES_KEY, [])
        caches.append(self)
        db.extensions.setdefault(STATS_KEY, lambda: cache_stats(db))
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
        manager = sync.info.get("asyncdb_manager")
        if manager is None:
            return False  # not a toolkit session: its commits are never published
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

    async def get_detached(self, repo: Repository[Any], ident: Any) -> Any:
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

    async def get_by_id(self, repo: Repository[Any], session: AsyncSession, ident: Any) -> Any:
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
        self, repo: Repository[Any], kind: str, filters: Mapping[str, Any], with_deleted: bool
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
        repo: Repository[Any],
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
    known = sync.info.get(_FRESH_KEY)
    if known is not None and known[0] is transaction:
        return bool(known[1])
    connection = (await session.connection()).sync_connection
    assert connection is not None
    fresh = _fresh(connection.get_execution_options(), dialect)
    sync.info[_FRESH_KEY] = (transaction, fresh)
    return fresh


def _fresh(options: Mapping[str, Any], dialect: Any) -> bool:
    if dialect.name == "sqlite":
        return bool(options.get(AUTOCOMMIT_OPTION)) or not options.get(READ_ONLY_OPTION)
    if dialect.name == "duckdb":  # snapshot isolation: only a one-statement read is fresh
        return bool(options.get(AUTOCOMMIT_OPTION))
    level = options.get("isolation_level") or dialect.default_isolation_level
    if dialect.name in ("postgresql", "mysql", "mariadb"):
        return str(level or "READ COMMITTED").upper() in _FRESH_LEVELS
    return str(level).upper() == "AUTOCOMMIT"


def cache_stats(db: AsyncDatabaseManager) -> dict[str, Any]:
    """The figures of every cache attached to ``db``, summed."""
    caches: list[RepositoryCache] = db.extensions.get(CACHES_KEY, [])
    total: dict[str, Any] = {"caches": len(caches)}
    for cache in caches:
        for name, value in cache.stats().items():
            if isinstance(value, int) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value
    lookups = total.get("hits", 0) + total.get("misses", 0)
    total["hit_rate"] = round(total["hits"] / lookups, 4) if lookups else None
    return total
