"""Figures for docs/performance.md: descending keyset pages on 900,000 rows, first page
against the deepest, with the ORDER BY asyncdb sends now and the one it sent before
(``NULLS LAST`` on every column). Not a test; run it by hand on a scratch database::

    python tools/measure_keyset.py postgresql+asyncpg://postgres@127.0.0.1/scratch
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

from sqlalchemy import Index, Integer, String, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asyncdb import AsyncDatabaseManager, Repository, TimestampMixin
from asyncdb._pagination import keyset_after

ROWS = 900_000
ROUNDS = 5
PAGES = 20


class _Base(DeclarativeBase):
    pass


class Feed(_Base, TimestampMixin):
    __tablename__ = "measure_keyset_feed"
    __table_args__ = (Index("ix_measure_keyset_feed_created_at", "created_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


async def _timed(call: Any) -> float:
    start = time.perf_counter()
    for _ in range(PAGES):
        await call()
    return (time.perf_counter() - start) / PAGES * 1000


async def main(url: str) -> None:
    db = AsyncDatabaseManager(url, max_page_size=ROWS)
    await db.connect()
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.drop_all)
            await conn.run_sync(_Base.metadata.create_all)
            await conn.execute(
                text(
                    "INSERT INTO measure_keyset_feed (name, created_at, updated_at) "
                    "SELECT 'e' || g, timestamp '2026-01-01' + g * interval '1 second', now() "
                    "FROM generate_series(1, :n) g"
                ),
                {"n": ROWS},
            )
            await conn.execute(text("ANALYZE measure_keyset_feed"))
        feed = Repository(Feed, db)
        results: dict[str, list[float]] = {}
        for order_by in ("-id", "-created_at"):
            field = order_by.lstrip("-")
            order = [(field, True)] + ([("id", False)] if field != "id" else [])
            deep = await feed.paginate_keyset(limit=ROWS - 100, order_by=order_by)
            last = deep.items[-1]
            values = [getattr(last, f) for f, _ in order]

            cols = [getattr(Feed, f).desc() if d else getattr(Feed, f) for f, d in order]
            old_first = select(Feed).order_by(*[c.nulls_last() for c in cols]).limit(51)
            old_deep = old_first.where(keyset_after(Feed, order, values))

            async def run(stmt: Any) -> None:
                async with db.session(read_only=True) as session:
                    (await session.scalars(stmt)).all()

            cases = {
                f"{order_by} first page, now": lambda o=order_by: feed.paginate_keyset(
                    limit=50, order_by=o
                ),
                f"{order_by} deep page, now": lambda o=order_by, c=deep.next_cursor: (
                    feed.paginate_keyset(after=c, limit=50, order_by=o)
                ),
                f"{order_by} first page, NULLS LAST": lambda s=old_first: run(s),
                f"{order_by} deep page, NULLS LAST": lambda s=old_deep: run(s),
            }
            for _ in range(ROUNDS):  # interleaved rounds: drift hits every case alike
                for name, call in cases.items():
                    results.setdefault(name, []).append(await _timed(call))
        for name, times in results.items():
            print(f"{name:40} {statistics.median(times):8.2f} ms per page (median of {ROUNDS})")
    finally:
        async with db.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.drop_all)
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
