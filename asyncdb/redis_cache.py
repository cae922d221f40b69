"""The Redis cache backend (``pip install 'asyncdb[redis]'``)::

    from asyncdb import RepositoryCache
    from asyncdb.redis_cache import RedisCacheBackend

    cache = RepositoryCache(ttl=60.0, backend=RedisCacheBackend("redis://cache:6379/0"))

See docs/scaling.md for what it guarantees across processes.
"""

from __future__ import annotations

from ._cache_redis import RedisCacheBackend

__all__ = ["RedisCacheBackend"]
