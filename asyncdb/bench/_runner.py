"""Running the bench: safety check, set-up, rounds of measurements, and clean-up.

Each round runs every workload on every stack, one measurement (a "cell") at a time.
The order of the stacks rotates from round to round, so a machine that drifts
(another process, a warming cache, autovacuum) hits every stack alike; the report
takes the median of the rounds. Each cell opens its stack, measures, and closes it,
so at most one stack's pool holds connections at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from sqlalchemy import pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .._errors import ConfigurationError
from .._settings import DatabaseSettings, mask_url
from ._base import Target
from ._progress import Progress
from ._schema import BenchSchema, foreign_tables, is_scratch_sqlite, make_schema
from ._stacks import STACKS, cache_class
from ._workloads import WORKLOADS, Data, Sample, Scale, Workload

__all__ = ["BenchFailedError", "BenchResult", "plan", "run_bench"]


class BenchFailedError(Exception):
    """A measurement raised; the bench cleaned up and stopped."""


@dataclasses.dataclass
class BenchResult:
    """Everything one run measured, for the report."""

    url: str
    backend: str
    server: str
    driver: str
    scale: Scale
    rounds: int
    table: str
    started: dt.datetime
    seconds: float
    #: workload name → stack name → one sample per round
    samples: dict[str, dict[str, list[Sample]]]
    #: stacks and workloads left out, with the reason
    skipped: list[str]


def plan(backend: str, only: Sequence[str] | None) -> tuple[list[Workload], dict[str, str]]:
    """The workloads to run (each with its available stacks) and the skipped ones, why."""
    skipped: dict[str, str] = {}
    unknown = sorted(set(only or ()) - set(WORKLOADS))
    if unknown:
        msg = f"Unknown workload(s): {', '.join(unknown)}. Choose from: {', '.join(WORKLOADS)}."
        raise ConfigurationError(msg)
    cache, why_not = cache_class()
    if cache is None:
        skipped["asyncdb+cache"] = f"skipped: {why_not}"
    workloads = []
    for workload in WORKLOADS.values():
        if only and workload.name not in only:
            continue
        if workload.backends and backend not in workload.backends:
            skipped[workload.name] = (
                f"skipped on {backend}: the liveness check matters for a networked server"
            )
            continue
        stacks = tuple(
            name
            for name in workload.stacks
            if name not in skipped
            and (not STACKS[name].backends or backend in STACKS[name].backends)
        )
        workloads.append(dataclasses.replace(workload, stacks=stacks))
    return workloads, skipped


async def run_bench(
    url: str | None,
    *,
    rounds: int,
    scale: Scale,
    only: Sequence[str] | None = None,
    yes: bool = False,
    progress: TextIO | None = None,
) -> BenchResult:
    """Run the bench against ``url`` (None: the ``ASYNCDB_*`` settings' URL).

    Raises :class:`~asyncdb.ConfigurationError` when it refuses to run, and
    :class:`BenchFailedError` when a measurement failed; its tables are dropped either way.
    """
    settings = DatabaseSettings.from_env() if url is None else DatabaseSettings(url=url)
    if settings.is_memory:
        msg = (
            "asyncdb bench needs a database every connection sees, and each connection to "
            "an in-memory SQLite (or DuckDB) database gets its own. Use a file, e.g. "
            "--url sqlite+aiosqlite:///./bench.sqlite3."
        )
        raise ConfigurationError(msg)
    backend = settings.backend
    workloads, skipped = plan(backend, only)
    sqlite_file = _sqlite_path(settings.url)
    fresh_file = sqlite_file is not None and not sqlite_file.exists()
    admin = create_async_engine(settings.url, poolclass=pool.NullPool)
    try:
        server = await _prepare(admin, backend)
        if not yes and not is_scratch_sqlite(settings.url):
            await _refuse_if_in_use(admin, settings.masked_url)
        schema = make_schema()
        started = dt.datetime.now(dt.timezone.utc)
        t0 = time.perf_counter()
        try:
            await schema.create(admin, scale.seed_rows)
            data = Data(scale=scale, ids=await schema.read_ids(admin))
            target = Target(settings.url, backend, schema, cache_entries=scale.seed_rows * 2)
            samples = await _rounds(admin, schema, target, data, workloads, rounds, progress)
        finally:
            await _drop(schema, admin)
    finally:
        await admin.dispose()
        if fresh_file and sqlite_file is not None:
            _remove_if_empty(sqlite_file)
    return BenchResult(
        url=mask_url(settings.url),
        backend=backend,
        server=server,
        driver=_DRIVER_NAMES.get(backend, backend),
        scale=scale,
        rounds=rounds,
        table=schema.name,
        started=started,
        seconds=time.perf_counter() - t0,
        samples=samples,
        skipped=[f"{name}: {why}" for name, why in skipped.items()],
    )


async def _rounds(
    admin: AsyncEngine,
    schema: BenchSchema,
    target: Target,
    data: Data,
    workloads: list[Workload],
    rounds: int,
    stream: TextIO | None,
) -> dict[str, dict[str, list[Sample]]]:
    samples: dict[str, dict[str, list[Sample]]] = {w.name: {} for w in workloads}
    cells = rounds * sum(len(w.stacks) for w in workloads)
    progress = Progress(cells, label="asyncdb bench", stream=stream) if stream else None
    done = 0
    try:
        for round_no in range(rounds):
            for workload in workloads:
                stacks = list(workload.stacks)
                shift = round_no % len(stacks) if stacks else 0
                for name in stacks[shift:] + stacks[:shift]:
                    if progress is not None:
                        progress.update(done, f"round {round_no + 1}: {workload.name} · {name}")
                    sample = await _cell(admin, schema, target, data, workload, name)
                    samples[workload.name].setdefault(name, []).append(sample)
                    done += 1
        if progress is not None:
            progress.update(done, "done")
    finally:
        if progress is not None:
            progress.finish()
    return samples


async def _cell(
    admin: AsyncEngine,
    schema: BenchSchema,
    target: Target,
    data: Data,
    workload: Workload,
    name: str,
) -> Sample:
    stack = STACKS[name].build(target)
    try:
        await stack.open()
        sample = await workload.measure(stack, data)
    except Exception as exc:
        with contextlib.suppress(Exception):
            await stack.close()
        msg = f"The {workload.name} workload failed on the {name} stack: {exc!r}"
        raise BenchFailedError(msg) from exc
    except BaseException:
        # Interrupted (Ctrl-C cancels the task): release the connections first, or one
        # left inside a transaction would block dropping the tables.
        with contextlib.suppress(Exception):
            await stack.close()
        raise
    await stack.close()
    if workload.tidy == "write":
        await schema.empty_write_table(admin)
    elif workload.tidy == "read":
        await schema.tidy_read_table(admin)
    return sample


async def _drop(schema: BenchSchema, admin: AsyncEngine) -> None:
    try:
        await schema.drop(admin)
    except Exception as exc:
        names = ", ".join(schema.table_names)
        msg = f"Could not drop the bench's tables ({names}): {exc!r}. Drop them by hand."
        raise BenchFailedError(msg) from exc


_DRIVER_NAMES = {
    "postgresql": "asyncpg",
    "sqlite": "aiosqlite",
    "mysql": "asyncmy",
    "duckdb": "aioduckdb",
}


async def _prepare(admin: AsyncEngine, backend: str) -> str:
    """Check the server answers; return its version. SQLite files are switched to WAL
    first (the mode persists in the file), so every stack runs in the same mode."""
    async with admin.connect() as conn:
        if backend == "sqlite":
            await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            version = await conn.scalar(text("SELECT sqlite_version()"))
            return f"SQLite {version}"
        if backend == "mysql":
            return f"MariaDB/MySQL {await conn.scalar(text('SELECT VERSION()'))}"
        if backend == "duckdb":
            return f"DuckDB {await conn.scalar(text('SELECT version()'))}"
        version = await conn.scalar(text("SHOW server_version"))
        return f"PostgreSQL {version}"


async def _refuse_if_in_use(admin: AsyncEngine, masked_url: str) -> None:
    tables = await foreign_tables(admin)
    if tables:
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        msg = (
            f"Refusing to run: the database at {masked_url} already holds {len(tables)} "
            f"table(s) of its own ({shown}), so it may be in use. The bench only creates and "
            "drops its own uniquely named tables, but it loads the server for minutes. "
            "Point --url at a scratch database, or pass --yes to run here anyway."
        )
        raise ConfigurationError(msg)


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database).expanduser()


def _remove_if_empty(path: Path) -> None:
    """Remove a SQLite file the bench created, if it holds no tables any more."""
    import sqlite3

    try:
        with sqlite3.connect(path) as conn:
            count = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
            empty = count.fetchone()[0] == 0
        conn.close()
    except sqlite3.Error:
        return
    if empty:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
