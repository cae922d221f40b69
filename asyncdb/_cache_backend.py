"""Where a :class:`~asyncdb.RepositoryCache` keeps values: the backend protocol and the
in-process LRU backend."""

from __future__ import annotations

import collections
import copy
import datetime as dt
import decimal
import enum
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from ._errors import ConfigurationError

__all__ = [
    "DEFAULT_CACHE_MAX_ENTRIES",
    "DEFAULT_CACHE_TTL",
    "CacheBackend",
    "MemoryCacheBackend",
]

#: Seconds a cached row lives at most (a bound on staleness from writes the toolkit
#: cannot see, such as another program's SQL).
DEFAULT_CACHE_TTL = 300.0
#: Rows (and counts) the in-process backend holds at most.
DEFAULT_CACHE_MAX_ENTRIES = 10_000

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
