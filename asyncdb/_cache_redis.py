"""A Redis backend for :class:`~asyncdb.RepositoryCache`: one cache shared by processes.

::

    from asyncdb.redis_cache import RedisCacheBackend

    cache = RepositoryCache(ttl=60.0, backend=RedisCacheBackend("redis://cache:6379/0"))

How it keeps the :class:`~asyncdb.CacheBackend` contract across processes:

* **Invalidation at commit.** ``invalidate`` runs inside the commit (in SQLAlchemy's
  greenlet, before ``commit()`` returns): it bumps the key's generation (or the model's
  epoch) and deletes the value in Redis, then publishes the invalidation on a channel.
  Any process reading after the writer's ``commit()`` returned misses and reads the
  database.
* **No stale store.** ``begin_load`` reads the key's generation and the model's epoch;
  ``store`` writes through a Lua script that compares both first, atomically, so a slow
  reader in another process cannot put back a value a writer just replaced.
* **Optional local layer.** With ``local_ttl`` set, each process also keeps hits in
  memory; the published invalidations evict them. A local hit can then be stale for the
  time the message takes to arrive (the publish latency), and never longer than
  ``local_ttl``. Without it (the default) there is no staleness beyond the commit.
* **Degrades to the database.** When Redis does not answer, every call behaves as a miss
  (reads go to the database, nothing is stored, the local layer is dropped) and Redis is
  tried again after ``retry_after`` seconds; no error reaches the caller.

Values are JSON with tags for datetimes, dates, times, decimals, UUIDs and bytes; a row
with any other type (an Enum member, say) is simply not cached. Nothing is unpickled.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import decimal
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.util import await_only

from ._cache_backend import MemoryCacheBackend
from ._errors import ConfigurationError

__all__ = ["RedisCacheBackend"]

logger = logging.getLogger("asyncdb")

DEFAULT_PREFIX = "asyncdb"
DEFAULT_RETRY_AFTER = 1.0
DEFAULT_SOCKET_TIMEOUT = 0.5
# Generation counters outlive any value by far, so an expired counter cannot make an
# old token look current.
GENERATION_TTL_SECONDS = 86_400

_STORE = """
local gen = redis.call('GET', KEYS[2]) or ''
local epoch = redis.call('GET', KEYS[3]) or ''
if gen ~= ARGV[1] or epoch ~= ARGV[2] then return 0 end
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
return 1
"""


class _Unencodable(Exception):
    pass


def _tag(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$d": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$t": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$dec": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):
        return [_tag(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        if any(k.startswith("$") for k in value):
            raise _Unencodable
        return {k: _tag(v) for k, v in value.items()}
    raise _Unencodable


_UNTAG = {
    "$dt": dt.datetime.fromisoformat,
    "$d": dt.date.fromisoformat,
    "$t": dt.time.fromisoformat,
    "$dec": decimal.Decimal,
    "$uuid": uuid.UUID,
    "$b": base64.b64decode,
}


def _untag(value: Any) -> Any:
    if isinstance(value, list):
        return [_untag(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            (tag, raw), *_ = value.items()
            if tag in _UNTAG:
                return _UNTAG[tag](raw)
        return {k: _untag(v) for k, v in value.items()}
    return value


def _canonical(key: Any) -> Any:
    """The same JSON for the same key in every process (sets sorted, types tagged)."""
    if isinstance(key, tuple):
        return ["t", [_canonical(k) for k in key]]
    if isinstance(key, frozenset):
        return ["s", sorted((_canonical(k) for k in key), key=json.dumps)]
    return ["v", _tag(key)]


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _key_id(key: Hashable) -> str:
    text = json.dumps(_canonical(key), separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class RedisCacheBackend:
    """A :class:`~asyncdb.CacheBackend` in Redis (redis-py's asyncio client).

    ``url`` names the Redis server (``redis://host:6379/0``); ``prefix`` separates
    applications sharing one server; ``local_ttl`` turns on the in-process layer (see the
    module docs for the staleness it allows); ``socket_timeout`` bounds every call and
    ``retry_after`` is how long Redis is left alone after a failure.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = DEFAULT_PREFIX,
        local_ttl: float | None = None,
        local_max_entries: int = 10_000,
        socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
        retry_after: float = DEFAULT_RETRY_AFTER,
    ) -> None:
        if local_ttl is not None and not local_ttl > 0:
            msg = f"local_ttl must be a positive number of seconds, or None (got {local_ttl!r})."
            raise ConfigurationError(msg)
        try:
            self._client = aioredis.Redis.from_url(
                url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
            )
        except ValueError as exc:
            msg = "url is not a Redis URL. Use the form 'redis://host:6379/0'."
            raise ConfigurationError(msg) from exc
        self.prefix = prefix
        self.channel = f"{prefix}:invalidations"
        self.local_ttl = local_ttl
        self.retry_after = retry_after
        self._local = MemoryCacheBackend(max_entries=local_max_entries) if local_ttl else None
        # Published invalidations name keys by id: the local keys behind each id.
        self._local_keys: dict[tuple[str, str], Hashable] = {}
        self._local_max = local_max_entries
        self._store_script = self._client.register_script(_STORE)
        self._origin = uuid.uuid4().hex
        self._down_until = 0.0
        self._listener: asyncio.Task[None] | None = None
        self._listening = False
        self.errors = 0
        self.invalidations_sent = 0
        self.invalidations_received = 0

    # -- keys ------------------------------------------------------------------------

    def _keys(self, namespace: str, key: Hashable) -> tuple[str, str, str]:
        kid = _key_id(key)
        return (
            f"{self.prefix}:v:{namespace}:{kid}",
            f"{self.prefix}:g:{namespace}:{kid}",
            f"{self.prefix}:e:{namespace}",
        )

    # -- availability ----------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False while Redis is left alone after a failure."""
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.available:
            logger.warning(
                "Redis cache unavailable (%s); reads go to the database for %.1f s",
                type(exc).__name__,
                self.retry_after,
            )
        self._down_until = time.monotonic() + self.retry_after
        if self._local is not None:
            self._local.clear()  # invalidations may be missed meanwhile

    def _local_usable(self) -> bool:
        return self._local is not None and self._listening and self.available

    # -- the CacheBackend protocol -----------------------------------------------------

    async def get(self, namespace: str, key: Hashable) -> Mapping[str, Any] | None:
        """The values stored under the key, or None (missing, expired, or Redis down)."""
        self._ensure_listener()
        if self._local_usable():
            assert self._local is not None
            found = await self._local.get(namespace, key)
            if found is not None:
                return found
        if not self.available:
            return None
        value_key, _, epoch_key = self._keys(namespace, key)
        try:
            raw, epoch = await self._client.mget(value_key, epoch_key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        if raw is None:
            return None
        stored = json.loads(raw)
        if stored.get("epoch") != _text(epoch):
            return None
        values: dict[str, Any] = _untag(stored["values"])
        return values

    async def begin_load(self, namespace: str, key: Hashable) -> object:
        """The key's generation and the namespace's epoch, read now."""
        self._ensure_listener()
        local = None
        if self._local is not None:
            if len(self._local_keys) > 4 * self._local_max:
                self._local_keys.clear()
                self._local.clear()
            self._local_keys[(namespace, _key_id(key))] = key
            local = await self._local.begin_load(namespace, key)
        if not self.available:
            return (None, None, local)
        _, gen_key, epoch_key = self._keys(namespace, key)
        try:
            gen, epoch = await self._client.mget(gen_key, epoch_key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return (None, None, local)
        return (
            _text(gen),
            _text(epoch),
            local,
        )

    async def store(
        self,
        namespace: str,
        key: Hashable,
        values: Mapping[str, Any],
        token: object,
        ttl: float | None,
    ) -> bool:
        """Store unless the key or namespace was invalidated since ``token`` (atomic)."""
        assert isinstance(token, tuple)
        gen, epoch, local = token
        if gen is None or not self.available:
            return False
        try:
            payload = json.dumps({"epoch": epoch, "values": _tag(dict(values))})
        except _Unencodable:
            return False
        value_key, gen_key, epoch_key = self._keys(namespace, key)
        millis = 0 if ttl is None else max(1, int(ttl * 1000))
        try:
            stored = await self._store_script(
                keys=[value_key, gen_key, epoch_key], args=[gen, epoch, payload, millis]
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        if stored and self._local_usable():
            assert self._local is not None
            await self._local.store(namespace, key, values, local, self.local_ttl)
        return bool(stored)

    def end_load(self, namespace: str, key: Hashable, token: object) -> None:
        """Release the local layer's bookkeeping of the read."""
        assert isinstance(token, tuple)
        if self._local is not None and token[2] is not None:
            self._local.end_load(namespace, key, token[2])

    def invalidate(self, namespace: str, keys: Iterable[Hashable] | None) -> None:
        """Drop the keys (or the namespace) in Redis and tell every process; runs in the
        commit's greenlet."""
        key_list = None if keys is None else list(keys)
        if self._local is not None:
            self._local.invalidate(namespace, key_list)
        if not self.available:
            return
        await_only(self._invalidate(namespace, key_list))

    async def _invalidate(self, namespace: str, keys: list[Hashable] | None) -> None:
        pipe = self._client.pipeline(transaction=True)
        ids: list[str] | None = None
        if keys is None:
            pipe.incr(f"{self.prefix}:e:{namespace}")
        else:
            ids = []
            for key in keys:
                value_key, gen_key, _ = self._keys(namespace, key)
                pipe.incr(gen_key)
                pipe.expire(gen_key, GENERATION_TTL_SECONDS)
                pipe.delete(value_key)
                ids.append(_key_id(key))
        message = {"origin": self._origin, "namespace": namespace, "keys": ids}
        pipe.publish(self.channel, json.dumps(message))
        try:
            await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        self.invalidations_sent += 1

    def clear(self) -> None:
        """Drop every value under this backend's prefix (every process sees it)."""
        if self._local is not None:
            self._local.clear()
        if self.available:
            await_only(self._clear())

    async def _clear(self) -> None:
        try:
            async for name in self._client.scan_iter(match=f"{self.prefix}:v:*", count=500):
                await self._client.delete(name)
            await self._client.publish(
                self.channel, json.dumps({"origin": self._origin, "namespace": None})
            )
        except (RedisError, OSError) as exc:
            self._failed(exc)

    def stats(self) -> dict[str, Any]:
        """Redis errors, invalidations sent and received, and the local layer's size."""
        return {
            "size": len(self._local) if self._local is not None else 0,
            "redis_available": self.available,
            "redis_errors": self.errors,
            "invalidations_sent": self.invalidations_sent,
            "invalidations_received": self.invalidations_received,
        }

    # -- the invalidation listener (local layer only) --------------------------------

    def _ensure_listener(self) -> None:
        if self._local is None or self._listener is not None:
            return
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(), name="asyncdb-redis-invalidations"
        )

    async def _listen(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self._listening = True
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None:
                        self._received(message.get("data"))
            except (RedisError, OSError) as exc:
                self._listening = False
                self._failed(exc)
            finally:
                self._listening = False
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(self.retry_after)

    def _received(self, data: Any) -> None:
        assert self._local is not None
        try:
            message = json.loads(data)
        except (TypeError, ValueError):
            return
        self.invalidations_received += 1
        if message.get("origin") == self._origin:
            return
        namespace = message.get("namespace")
        if namespace is None:
            self._local.clear()
            self._local_keys.clear()
            return
        ids = message.get("keys")
        if ids is None:
            self._local.invalidate(namespace, None)
            return
        keys = [self._local_keys.pop((namespace, kid), None) for kid in ids]
        self._local.invalidate(namespace, [key for key in keys if key is not None])

    async def aclose(self) -> None:
        """Stop the listener and close the connections."""
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()
