"""The cost of read routing per call: ``python -m asyncdb.bench.routing PRIMARY REPLICA``.

Compares standalone ``Repository.get_by_id`` calls against the *same* server (the
replica), once through a manager that has no replicas and is pointed at the replica
directly, and once through a manager whose reads are routed there from the primary.
The I/O is identical, so the ratio is the routing layer's own cost: choosing the node,
the read-your-writes check, the session factory. Rounds alternate between the two and
the median ratio is reported. A benchmark, never a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from typing import Any

from sqlalchemy import Integer, String, insert, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .._manager import AsyncDatabaseManager
from .._repository import Repository

__all__ = ["main", "measure"]

ROWS = 1000


class _Base(DeclarativeBase):
    pass


class RoutingBenchRow(_Base):
    """The rows read by the benchmark."""

    __tablename__ = "asyncdb_bench_routing"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


async def _calls(repo: Repository[RoutingBenchRow], seconds: float, concurrency: int) -> float:
    """Calls per second of ``concurrency`` tasks reading for ``seconds``."""
    deadline = time.perf_counter() + seconds
    counts = [0] * concurrency

    async def worker(index: int) -> None:
        ident = index
        while time.perf_counter() < deadline:
            await repo.get_by_id(ident % ROWS + 1)
            ident += 7
            counts[index] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return sum(counts) / (time.perf_counter() - started)


async def _prepare(primary: str, replica: str) -> None:
    async with AsyncDatabaseManager(primary) as db, db.engine.begin() as conn:
        await conn.run_sync(_Base.metadata.drop_all)
        await conn.run_sync(_Base.metadata.create_all)
        await conn.execute(
            insert(RoutingBenchRow),
            [{"id": i, "name": f"row {i}"} for i in range(1, ROWS + 1)],
        )
    async with AsyncDatabaseManager(replica) as db:
        for _ in range(2400):
            found = None
            # Until the table has been replayed, the query fails.
            with contextlib.suppress(Exception):
                async with db.engine.connect() as conn:
                    found = (await conn.execute(text(f"SELECT count(*) FROM {_table()}"))).scalar()
            if found == ROWS:
                return
            await asyncio.sleep(0.05)
    msg = "the replica did not replay the benchmark table within 120 s"
    raise RuntimeError(msg)


def _table() -> str:
    return RoutingBenchRow.__tablename__


async def measure(
    primary: str, replica: str, *, rounds: int = 7, seconds: float = 2.0, concurrency: int = 10
) -> dict[str, Any]:
    """Calls per second without and with routing, per round, and the median ratio."""
    await _prepare(primary, replica)
    pool = {"pool_size": concurrency, "max_overflow": 0}
    direct = AsyncDatabaseManager(replica, **pool)
    routed = AsyncDatabaseManager(primary, replicas=[replica], max_replica_lag=None, **pool)
    results: dict[str, list[float]] = {"direct": [], "routed": []}
    try:
        await direct.connect()
        await routed.connect()
        repos = {
            "direct": Repository(RoutingBenchRow, direct),
            "routed": Repository(RoutingBenchRow, routed),
        }
        for repo in repos.values():
            await _calls(repo, 0.5, concurrency)  # warm the pools
        for index in range(rounds):
            order = ("direct", "routed") if index % 2 == 0 else ("routed", "direct")
            for name in order:
                results[name].append(await _calls(repos[name], seconds, concurrency))
        router = routed.router
        assert router is not None
        routed_reads = router.nodes[0].reads
        # The routing decision alone, without I/O: what each routed read adds in CPU.
        count = 100_000
        started = time.perf_counter()
        for _ in range(count):
            router.choose("auto")
        choose_us = (time.perf_counter() - started) / count * 1e6
    finally:
        await direct.dispose()
        await routed.dispose()
        async with AsyncDatabaseManager(primary) as db, db.engine.begin() as conn:
            await conn.run_sync(_Base.metadata.drop_all)
    ratios = [r / d for r, d in zip(results["routed"], results["direct"], strict=True)]
    call_us = 1e6 * concurrency / statistics.median(results["direct"])
    return {
        "choose_us_per_call": round(choose_us, 3),
        "direct_us_per_call": round(call_us, 1),
        "choose_share_percent": round(choose_us / call_us * 100, 4),
        "direct_calls_per_s": [round(x) for x in results["direct"]],
        "routed_calls_per_s": [round(x) for x in results["routed"]],
        "median_ratio_routed_vs_direct": round(statistics.median(ratios), 4),
        "overhead_percent": round((1 - statistics.median(ratios)) * 100, 2),
        "reads_on_replica": routed_reads,
        "rounds": rounds,
        "seconds": seconds,
        "concurrency": concurrency,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: ``PRIMARY_URL REPLICA_URL [--rounds N] [--seconds S]``."""
    parser = argparse.ArgumentParser(prog="python -m asyncdb.bench.routing")
    parser.add_argument("primary")
    parser.add_argument("replica")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args(argv)
    result = asyncio.run(
        measure(
            args.primary,
            args.replica,
            rounds=args.rounds,
            seconds=args.seconds,
            concurrency=args.concurrency,
        )
    )
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
