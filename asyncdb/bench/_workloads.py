"""The workloads: what each measurement does, timed for a fixed wall-clock duration.

A measurement runs a few untimed warm-up operations (they fill statement caches and,
for the cached stack, the cache), then as many operations as fit in ``duration``
seconds, and reports the rate. The workloads that insert leave rows behind, which the
runner deletes before the next measurement, so every stack sees the same table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._base import Stack
from ._schema import seed_values

__all__ = ["FULL", "QUICK", "WORKLOADS", "Data", "Sample", "Scale", "Workload"]


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big the work is. ``QUICK`` is for tests and smoke runs."""

    seed_rows: int = 2_000
    bulk_rows: int = 10_000
    page_size: int = 50
    concurrency: int = 32
    #: Distinct ids the single-row reads and updates cycle through.
    read_ids: int = 500
    #: Seconds each measurement runs.
    duration: float = 1.0
    warmup: int = 20


FULL = Scale()
QUICK = Scale(seed_rows=150, bulk_rows=500, read_ids=50, duration=0.05, warmup=3)


@dataclasses.dataclass
class Data:
    """What the workloads share within a run: the seeded ids and a value counter."""

    scale: Scale
    ids: list[int]
    counter: itertools.count[int] = dataclasses.field(default_factory=itertools.count)
    bulk: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        step = max(len(self.ids) // max(self.scale.read_ids, 1), 1)
        self.ids = self.ids[::step][: self.scale.read_ids] or self.ids
        self.bulk = seed_values(self.scale.bulk_rows, prefix="bulk")

    def new_row(self) -> dict[str, Any]:
        n = next(self.counter)
        return {"name": f"created {n:07d}", "qty": n % 1000, "note": f"created row {n}"}

    def new_values(self) -> dict[str, Any]:
        n = next(self.counter)  # always a new value, so every update really changes the row
        return {"qty": n, "note": f"updated {n}"}


@dataclasses.dataclass(frozen=True)
class Sample:
    """One measurement: ``ops`` operations of ``units`` each in ``seconds``."""

    ops: int
    seconds: float
    units: int = 1

    @property
    def rate(self) -> float:
        """Units per second."""
        return self.ops * self.units / self.seconds if self.seconds > 0 else 0.0


Op = Callable[[int], Awaitable[Any]]


async def _timed(op: Op, duration: float, warmup: int) -> Sample:
    for i in range(warmup):
        await op(i)
    gc.collect()
    ops = 0
    start = time.perf_counter()
    deadline = start + duration
    while True:
        await op(warmup + ops)
        ops += 1
        now = time.perf_counter()
        if now >= deadline:
            return Sample(ops, now - start)


async def _create(stack: Stack, data: Data) -> Sample:
    async def op(i: int) -> Any:
        return await stack.create(data.new_row())

    return await _timed(op, data.scale.duration, data.scale.warmup)


async def _get_by_id(stack: Stack, data: Data) -> Sample:
    ids = data.ids
    await stack.warm(ids)

    async def op(i: int) -> Any:
        return await stack.get_by_id(ids[i % len(ids)])

    return await _timed(op, data.scale.duration, data.scale.warmup)


async def _update(stack: Stack, data: Data) -> Sample:
    ids = data.ids

    async def op(i: int) -> Any:
        return await stack.update(ids[i % len(ids)], data.new_values())

    return await _timed(op, data.scale.duration, data.scale.warmup)


async def _paginate(stack: Stack, data: Data) -> Sample:
    size = data.scale.page_size
    pages = max(data.scale.seed_rows // size, 1)

    async def op(i: int) -> Any:
        return await stack.paginate(i % pages + 1, size)

    return await _timed(op, data.scale.duration, data.scale.warmup)


async def _bulk_create(stack: Stack, data: Data) -> Sample:
    rows = data.bulk
    await stack.bulk_create(rows[:100])  # warm-up: the statements, not the row count

    async def op(i: int) -> Any:
        return await stack.bulk_create(rows)

    sample = await _timed(op, data.scale.duration, 0)
    return dataclasses.replace(sample, units=len(rows))


async def _bulk_upsert(stack: Stack, data: Data) -> Sample:
    # Every operation upserts the same ids: the first inserts them, the later ones
    # update them, alternating between two versions so every update changes each row.
    versions = [
        [{**row, "id": i + 1, "qty": row["qty"] + v} for i, row in enumerate(data.bulk)]
        for v in (0, 1)
    ]
    await stack.bulk_upsert(versions[1][:100])  # warm-up: the statements

    async def op(i: int) -> Any:
        return await stack.bulk_upsert(versions[i % 2])

    sample = await _timed(op, data.scale.duration, 0)
    return dataclasses.replace(sample, units=len(data.bulk))


async def _concurrent(stack: Stack, data: Data) -> Sample:
    ids = data.ids
    tasks = data.scale.concurrency
    await stack.warm(ids)

    async def warm(worker: int) -> None:
        for i in range(2):
            await stack.get_by_id(ids[(worker + i) % len(ids)])

    await asyncio.gather(*(warm(w) for w in range(tasks)))
    gc.collect()
    done = 0
    start = time.perf_counter()
    deadline = start + data.scale.duration

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while True:  # at least one operation, as _timed does: a late start still counts
            await stack.get_by_id(ids[i % len(ids)])
            done += 1
            i += tasks
            if time.perf_counter() >= deadline:
                return

    await asyncio.gather(*(worker(w) for w in range(tasks)))
    return Sample(done, time.perf_counter() - start)


async def _concurrent_updates(stack: Stack, data: Data) -> Sample:
    # Each task updates its own rows: writers of different entities, as in a busy service.
    ids = data.ids
    tasks = data.scale.concurrency
    for ident in ids[: data.scale.warmup]:
        await stack.update(ident, data.new_values())
    gc.collect()
    done = 0
    start = time.perf_counter()
    deadline = start + data.scale.duration

    async def worker(offset: int) -> None:
        nonlocal done
        mine = ids[offset::tasks] or ids
        i = 0
        while True:  # at least one operation (see _concurrent)
            await stack.update(mine[i % len(mine)], data.new_values())
            done += 1
            i += 1
            if time.perf_counter() >= deadline:
                return

    await asyncio.gather(*(worker(w) for w in range(tasks)))
    return Sample(done, time.perf_counter() - start)


async def _keyset(stack: Stack, data: Data) -> Sample:
    cursor: Any = None

    async def op(i: int) -> Any:
        nonlocal cursor
        _, cursor = await stack.keyset_page(cursor, data.scale.page_size)

    return await _timed(op, data.scale.duration, data.scale.warmup)


async def _keyset_desc(stack: Stack, data: Data) -> Sample:
    # Walk newest first to the last full page (untimed), then read that deep page again
    # and again: the page a client reaches at the end of a descending walk.
    size = data.scale.page_size
    cursor: Any = None
    for _ in range(max(data.scale.seed_rows // size - 2, 0)):
        _, cursor = await stack.keyset_page(cursor, size, descending=True)
    deep = cursor

    async def op(i: int) -> Any:
        return await stack.keyset_page(deep, size, descending=True)

    return await _timed(op, data.scale.duration, data.scale.warmup)


async def _list_page(stack: Stack, data: Data) -> Sample:
    # Pages 1..10 of the article list, for readers who follow and favourite.
    readers = max(len(data.ids) // 20, 1)

    async def op(i: int) -> Any:
        return await stack.list_page(i % readers + 1, (i % 10) * 20)

    return await _timed(op, data.scale.duration, data.scale.warmup)


@dataclasses.dataclass(frozen=True)
class Workload:
    """A named measurement, the stacks it compares, and the tidy-up it needs after."""

    name: str
    unit: str
    description: str
    stacks: tuple[str, ...]
    measure: Callable[[Stack, Data], Awaitable[Sample]]
    #: "write": empty the insert table afterwards; "read": tidy the updated read table.
    tidy: str = ""
    #: A read outside a unit of work (asyncdb runs it without BEGIN/COMMIT).
    read: bool = False
    backends: tuple[str, ...] = ()


_CORE = ("raw", "core", "orm", "asyncdb", "asyncdb-nometrics")

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "create",
            "ops/s",
            "insert one row and commit",
            (*_CORE, "asyncdb+audit"),
            _create,
            tidy="write",
        ),
        Workload(
            "get_by_id",
            "ops/s",
            "read one row by primary key",
            (*_CORE, "asyncdb+cache"),
            _get_by_id,
            read=True,
        ),
        Workload(
            "update",
            "ops/s",
            "change one row by primary key and commit",
            (*_CORE, "asyncdb+audit"),
            _update,
            tidy="read",
        ),
        Workload(
            "paginate",
            "ops/s",
            "one offset page of {page_size} rows with the total count",
            _CORE,
            _paginate,
            read=True,
        ),
        Workload(
            "bulk_create",
            "rows/s",
            "insert {bulk_rows:,} rows in one transaction (ORM: add_all)",
            (*_CORE, "asyncdb+audit"),
            _bulk_create,
            tidy="write",
        ),
        Workload(
            "bulk_upsert",
            "rows/s",
            "upsert {bulk_rows:,} rows by id in one transaction (inserts, then updates)",
            ("raw", "core", "asyncdb", "asyncdb-nometrics", "asyncdb+audit"),
            _bulk_upsert,
            tidy="write",
        ),
        Workload(
            "concurrent",
            "ops/s",
            "get_by_id from {concurrency} tasks over a pool of {pool_size}",
            (*_CORE, "asyncdb+cache"),
            _concurrent,
            read=True,
        ),
        Workload(
            "concurrent_updates",
            "ops/s",
            "update from {concurrency} tasks, each on its own rows, over a pool of {pool_size}",
            (*_CORE, "asyncdb+audit"),
            _concurrent_updates,
            tidy="read",
        ),
        Workload(
            "keyset",
            "pages/s",
            "walk the table in keyset pages of {page_size}",
            _CORE,
            _keyset,
            read=True,
        ),
        Workload(
            "keyset_desc",
            "pages/s",
            "the deepest keyset page of {page_size}, newest first (-id)",
            _CORE,
            _keyset_desc,
            read=True,
        ),
        Workload(
            "list_page_relations",
            "pages/s",
            "20 articles with author, following flag, tags, favourite count and flag",
            ("orm-n+1", "orm", "asyncdb"),
            _list_page,
            read=True,
        ),
        Workload(
            "liveness",
            "ops/s",
            "get_by_id with each liveness check at checkout",
            ("orm", "orm+ping", "asyncdb", "asyncdb-noping"),
            _get_by_id,
            read=True,
            backends=("postgresql",),
        ),
    )
}
