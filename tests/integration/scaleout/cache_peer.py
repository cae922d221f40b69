"""Process B of the shared-cache tests: reads through a Redis-backed cache on command.

Run as ``python -m tests.integration.scaleout.cache_peer DB_URL REDIS_URL LOCAL_TTL PREFIX``;
reads one JSON command per line on stdin, answers one JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from asyncdb import AsyncDatabaseManager, Repository, RepositoryCache
from asyncdb.redis_cache import RedisCacheBackend
from tests.integration.models import Counter


async def main(db_url: str, redis_url: str, local_ttl: float | None, prefix: str) -> None:
    backend = RedisCacheBackend(redis_url, prefix=prefix, local_ttl=local_ttl, retry_after=0.2)
    cache = RepositoryCache(ttl=60.0, backend=backend)
    loop = asyncio.get_running_loop()
    async with AsyncDatabaseManager(db_url, connect_retries=1) as db:
        repo = Repository(Counter, db, cache=cache)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            answer: dict[str, object] = {}
            try:
                if command["op"] == "get":
                    row = await repo.get_by_id(command["id"])
                    answer["value"] = None if row is None else row.value
                elif command["op"] == "wait_received":
                    deadline = time.monotonic() + 10.0
                    while backend.invalidations_received < command["count"]:
                        if time.monotonic() > deadline:
                            raise TimeoutError("no invalidation received")
                        await asyncio.sleep(0.01)
                elif command["op"] == "quit":
                    break
            except Exception as exc:  # reported to the test, which fails on it
                answer["error"] = f"{type(exc).__name__}: {exc}"
            answer["stats"] = cache.stats()
            print(json.dumps(answer, default=str), flush=True)
        await backend.aclose()


if __name__ == "__main__":
    ttl = None if sys.argv[3] == "none" else float(sys.argv[3])
    asyncio.run(main(sys.argv[1], sys.argv[2], ttl, sys.argv[4]))
