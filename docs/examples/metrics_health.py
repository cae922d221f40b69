"""Health and metrics: the health report, the metrics snapshot and the slow-query log.

Run it with ``python docs/examples/metrics_health.py`` (``ASYNCDB_URL`` picks the database).
"""

from __future__ import annotations

import asyncio
import json

from sqlalchemy import text

from asyncdb import AsyncDatabaseManager


async def main() -> None:
    # Every statement slower than 1 ms lands in the slow-query log (default: 1 s).
    async with AsyncDatabaseManager(slow_query_threshold=0.001) as db:
        report = await db.health_check(timeout=2.0)
        print("healthy:", report.healthy, "backend:", report.backend, "url:", report.url)

        async with db.session() as session:
            for _ in range(20):
                await session.execute(text("SELECT 1"))

        snapshot = db.metrics.snapshot()
        print("queries:", snapshot["queries"]["total"])
        print("p95 seconds:", snapshot["queries"]["p95_seconds"])
        print("pool:", json.dumps(db.pool_status()))
        # The "top" list ranks statements by total time, which varies run to run (one slow
        # BEGIN can outweigh twenty SELECTs); the call counts do not.
        busiest = max(db.metrics.statements(), key=lambda figures: figures["calls"])
        print("most run:", busiest["statement"], f"({busiest['calls']} calls)")
        db.metrics.reset()
        print("after reset:", db.metrics.snapshot()["queries"]["total"])


if __name__ == "__main__":
    asyncio.run(main())
