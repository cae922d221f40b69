"""``asyncdb demo``: a narrated tour of asyncdb on a real database.

With no arguments it runs on the embedded SQLite default; ``--url`` points it at any
supported database. Each step prints what it does, then checks its own claim; the
exit code is 0 only when every check passed. The demo owns two tables,
``asyncdb_demo_project`` and ``asyncdb_demo_task``, which it drops and recreates at the
start (together with their audit rows), so it can run any number of times.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, delete, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from ._audit import get_audit_logs
from ._audit_model import AUDIT_TABLE, AuditLog
from ._capabilities import reason as capability_reason
from ._capabilities import supports
from ._cli_common import add_url_argument
from ._context import audit_context
from ._manager import AsyncDatabaseManager
from ._models import Audited, Base, SoftDeleteMixin, TimestampMixin
from ._repository import Repository
from ._schema import toolkit_metadata
from ._uow import AsyncUnitOfWork

__all__ = ["configure", "run", "run_demo"]

PROJECT_TABLE = "asyncdb_demo_project"
TASK_TABLE = "asyncdb_demo_task"
BULK_ROWS = 10_000
BULK_BATCH = 1_000


@functools.cache
def demo_models() -> tuple[type[Any], type[Any]]:
    """The demo's two models, on ``asyncdb.Base``.

    Defined on first use rather than at import, so that merely loading the ``asyncdb``
    command line never adds the demo's tables to an application's ``Base.metadata``.
    """

    class DemoProject(Base, TimestampMixin, SoftDeleteMixin, Audited):
        """A project: audited, timestamped, soft-deletable."""

        __tablename__ = PROJECT_TABLE
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        name: Mapped[str] = mapped_column(String(100))
        status: Mapped[str] = mapped_column(String(20), default="draft")

    class DemoTask(Base, TimestampMixin):
        """A task of a project: not audited (the audit trail is opt-in per model)."""

        __tablename__ = TASK_TABLE
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        project_id: Mapped[int] = mapped_column(ForeignKey(f"{PROJECT_TABLE}.id"))
        title: Mapped[str] = mapped_column(String(100))
        priority: Mapped[int] = mapped_column(Integer)

    return DemoProject, DemoTask


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo command's arguments."""
    add_url_argument(parser)


async def run(args: argparse.Namespace) -> int:
    """Run the demo from the command line."""
    return await run_demo(args.url)


class _Rollback(Exception):
    """Raised inside the savepoint to show that it undoes only its own block."""


@dataclasses.dataclass
class Tour:
    """The narration and the checks: every claim printed is a claim verified."""

    db: AsyncDatabaseManager
    project: type[Any]
    task: type[Any]
    checks: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    #: state carried from step to step
    apollo_id: int = 0
    correlation_id: str = ""

    def say(self, text: str) -> None:
        print(f"   {text}", flush=True)

    def code(self, text: str) -> None:
        print(f"   | {text}", flush=True)

    def check(self, ok: bool, claim: str) -> None:
        self.checks += 1
        if not ok:
            self.failures.append(claim)
        print(f"   {'ok' if ok else 'FAILED'}: {claim}", flush=True)


async def run_demo(url: str | None = None) -> int:
    """Run the tour; returns 0 only when every step did what it printed."""
    db = AsyncDatabaseManager(url)
    project, task = demo_models()
    print(f"asyncdb demo: a narrated tour on {db.url}", flush=True)
    started = time.perf_counter()
    async with db:
        tour = Tour(db, project, task)
        for number, (title, step) in enumerate(_STEPS, start=1):
            print(f"\n{number}. {title}", flush=True)
            try:
                await step(tour)
            except Exception as exc:
                tour.check(False, f"step {number} raised {type(exc).__name__}: {exc}")
                break
    elapsed = time.perf_counter() - started
    print(flush=True)
    if tour.failures:
        print(
            f"Demo FAILED: {len(tour.failures)} of {tour.checks} checks failed "
            f"({elapsed:.1f} s): {'; '.join(tour.failures)}",
            flush=True,
        )
        return 1
    print(f"Demo finished: all {tour.checks} checks passed in {elapsed:.1f} s.", flush=True)
    return 0


# -- the steps -------------------------------------------------------------------------


async def _connect(tour: Tour) -> None:
    db = tour.db
    async with db.engine.connect() as conn:
        answer = await conn.scalar(text("SELECT 1"))
        if db.backend == "sqlite":
            version = await conn.scalar(text("SELECT sqlite_version()"))
            mode = await conn.scalar(text("PRAGMA journal_mode"))
            server = f"SQLite {version}, journal mode {mode}"
        elif db.backend == "mysql":
            server = f"MariaDB/MySQL {await conn.scalar(text('SELECT VERSION()'))}"
        elif db.backend == "duckdb":
            server = f"DuckDB {await conn.scalar(text('SELECT version()'))}"
        else:
            server = f"PostgreSQL {await conn.scalar(text('SHOW server_version'))}"
    tour.code("async with AsyncDatabaseManager(url) as db: ...")
    tour.say(f"Connected to {db.url} ({server}).")
    tour.say(f"The pool: {_pool(db.pool_status())}.")
    tour.check(answer == 1, "the database answered SELECT 1")


async def _migrate(tour: Tour) -> None:
    db = tour.db
    tour.say(await _migrate_toolkit(db))
    project, task = tour.project, tour.task
    tables = [Base.metadata.tables[PROJECT_TABLE], Base.metadata.tables[TASK_TABLE]]
    async with db.engine.begin() as conn:
        had_audit = await conn.run_sync(_has_table, AUDIT_TABLE)
        await conn.run_sync(Base.metadata.drop_all, tables=tables)
        await conn.run_sync(Base.metadata.create_all, tables=tables)
        if had_audit:
            audit: Any = AuditLog.__table__
            await conn.execute(
                delete(audit).where(audit.c.table_name.in_([PROJECT_TABLE, TASK_TABLE]))
            )
    tour.say(
        f"Created the demo's own tables, {PROJECT_TABLE} and {TASK_TABLE} "
        "(dropping any left by an earlier run, with their audit rows)."
    )
    async with db.engine.connect() as conn:
        present = [await conn.run_sync(_has_table, name) for name in (AUDIT_TABLE, PROJECT_TABLE)]
    tour.check(all(present), f"the tables {AUDIT_TABLE} and {PROJECT_TABLE} exist")
    count = await Repository(project, db).count() + await Repository(task, db).count()
    tour.check(count == 0, "the demo's tables start empty")


async def _migrate_toolkit(db: AsyncDatabaseManager) -> str:
    """Bring the toolkit's tables (the audit log) up to date.

    The one place that chooses how: asyncdb's Alembic migrations (``asyncdb._migrate``)
    when this installation has them, else the tables created straight from
    ``toolkit_metadata``.
    """
    try:
        migrations: Any = importlib.import_module("asyncdb._migrate")
    except ImportError:
        migrations = None
    if migrations is not None and hasattr(migrations, "migrate"):
        result = await migrations.migrate(db)
        at = ", ".join(result.after) or "base"
        if result.applied:
            applied = ", ".join(result.applied)
            return f"Ran asyncdb's migrations: applied {applied}; the toolkit is at {at}."
        return f"asyncdb's migrations are up to date (the toolkit is at {at})."
    async with db.engine.begin() as conn:
        await conn.run_sync(toolkit_metadata.create_all)
    return "Created the toolkit's tables from toolkit_metadata (no migrations installed)."


async def _unit_of_work(tour: Tour) -> None:
    db, project = tour.db, tour.project
    tour.correlation_id = f"demo-{uuid.uuid4().hex[:8]}"
    tour.code(f'with audit_context(user_id="ada", correlation_id="{tour.correlation_id}"):')
    tour.code("    async with AsyncUnitOfWork(db) as uow:")
    tour.code("        projects = uow.get_repository(DemoProject)")
    tour.code('        apollo = await projects.create(name="Apollo", status="draft")')
    tour.code('        await projects.update(apollo.id, status="active")')
    with audit_context(user_id="ada", correlation_id=tour.correlation_id):
        async with AsyncUnitOfWork(db) as uow:
            projects = uow.get_repository(project)
            apollo = await projects.create(name="Apollo", status="draft")
            await projects.update(apollo.id, status="active")
    tour.apollo_id = apollo.id
    tour.say(
        f"Created project #{apollo.id} 'Apollo' and set it active, in one transaction, "
        "as user 'ada'; it committed when the block ended."
    )
    again = await Repository(project, db).get(apollo.id)
    tour.check(
        again.status == "active" and again.updated_at >= again.created_at,
        f"project #{apollo.id} reads back as 'active', with created_at and updated_at in UTC",
    )


async def _savepoint(tour: Tour) -> None:
    db, project = tour.db, tour.project
    if not supports(db.backend, "savepoint"):
        async with AsyncUnitOfWork(db, user_id="ada") as uow:
            await uow.get_repository(project).create(name="Gemini")  # the next steps use it
        tour.say(f"Skipped on {db.backend}: {capability_reason(db.backend, 'savepoint')}")
        return
    tour.code("async with AsyncUnitOfWork(db, user_id='ada') as uow:")
    tour.code('    await projects.create(name="Gemini")')
    tour.code("    async with uow.savepoint():")
    tour.code('        await projects.create(name="Mercury")')
    tour.code("        raise _Rollback  # undoes the savepoint only")
    async with AsyncUnitOfWork(db, user_id="ada") as uow:
        projects = uow.get_repository(project)
        await projects.create(name="Gemini")
        try:
            async with uow.savepoint():
                await projects.create(name="Mercury")
                raise _Rollback
        except _Rollback:
            tour.say("The savepoint rolled back; the unit of work went on and committed.")
    repo = Repository(project, db)
    tour.check(
        await repo.count(name="Gemini") == 1, "Gemini, created before the savepoint, is there"
    )
    tour.check(await repo.count(name="Mercury") == 0, "Mercury, created inside it, is absent")
    logs = await get_audit_logs(db, table_name=PROJECT_TABLE, limit=1000)
    names = [(log.new_values or {}).get("name") for log in logs]
    tour.check(
        "Mercury" not in names and "Gemini" in names,
        "Mercury's audit row rolled back with it; Gemini's stayed",
    )


async def _soft_delete(tour: Tour) -> None:
    db, project, ident = tour.db, tour.project, tour.apollo_id
    projects = Repository(project, db)
    tour.code('with audit_context(user_id="grace"):')
    tour.code(f"    await projects.delete({ident})  # soft: sets deleted_at")
    with audit_context(user_id="grace"):
        await projects.delete(ident)
    hidden = await projects.get_by_id(ident)
    kept = await projects.get_by_id(ident, with_deleted=True)
    tour.check(
        hidden is None and kept is not None and kept.deleted_at is not None,
        f"get_by_id({ident}) no longer sees it; with_deleted=True shows deleted_at "
        f"{kept.deleted_at:%Y-%m-%d %H:%M:%S} UTC"
        if kept is not None and kept.deleted_at is not None
        else "the soft-deleted row is hidden but kept",
    )
    tour.check(await projects.count() == 1, "count() skips it: 1 project (Gemini) remains")
    tour.code('with audit_context(user_id="grace"):')
    tour.code(f"    await projects.restore({ident})")
    with audit_context(user_id="grace"):
        await projects.restore(ident)
    back = await projects.get_by_id(ident)
    tour.check(back is not None and back.deleted_at is None, f"project #{ident} is back")


async def _bulk_create(tour: Tour) -> None:
    from .bench._progress import Progress

    db, task = tour.db, tour.task
    tour.code("async with AsyncUnitOfWork(db) as uow:")
    tour.code(f"    for batch in batches_of_{BULK_BATCH}(rows):")
    tour.code("        await uow.get_repository(DemoTask).bulk_create(batch)")
    progress = Progress(BULK_ROWS, label="   bulk_create")
    inserted = 0
    started = time.perf_counter()
    async with AsyncUnitOfWork(db) as uow:
        tasks = uow.get_repository(task)
        for start in range(0, BULK_ROWS, BULK_BATCH):
            rows = [
                {"project_id": tour.apollo_id, "title": f"task {n:05d}", "priority": n % 5}
                for n in range(start, min(start + BULK_BATCH, BULK_ROWS))
            ]
            inserted += await tasks.bulk_create(rows)
            progress.update(inserted)
    progress.finish()
    elapsed = time.perf_counter() - started
    tour.say(
        f"Inserted {inserted:,} tasks in one transaction in {elapsed:.2f} s "
        f"({inserted / elapsed:,.0f} rows/s); tasks are not Audited, so no audit rows."
    )
    count = await Repository(task, db).count()
    tour.check(count == BULK_ROWS, f"count() says {count:,} tasks")


async def _pages(tour: Tour) -> None:
    tasks = Repository(tour.task, tour.db)
    tour.code('await tasks.paginate(page=3, page_size=20, order_by=["-priority", "id"])')
    page = await tasks.paginate(page=3, page_size=20, order_by=["-priority", "id"])
    ids = [t.id for t in page.items]
    tour.say(
        f"Offset page {page.page} of {page.pages}: {len(ids)} of {page.total:,} tasks, "
        f"ids {ids[0]}..{ids[-1]}, has_next={page.has_next}."
        if ids
        else "Offset page 3 came back empty."
    )
    priorities = [t.priority for t in page.items]
    tour.check(
        page.total == BULK_ROWS and len(ids) == 20 and page.has_next,
        f"the page holds 20 rows and the total is {BULK_ROWS:,}",
    )
    tour.check(
        priorities == sorted(priorities, reverse=True), "its rows are by priority, highest first"
    )
    tour.code('page = await tasks.paginate_keyset(after=cursor, limit=1000, order_by="-priority")')
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        keyset = await tasks.paginate_keyset(after=cursor, limit=1000, order_by="-priority")
        pages += 1
        seen.extend(t.id for t in keyset.items)
        if not keyset.has_more or pages > BULK_ROWS:
            break
        cursor = keyset.next_cursor
    tour.say(f"Walked {pages} keyset pages with the opaque next_cursor of each.")
    tour.check(
        len(seen) == BULK_ROWS == len(set(seen)),
        f"the walk met all {BULK_ROWS:,} tasks, each exactly once",
    )


async def _audit_trail(tour: Tour) -> None:
    ident = tour.apollo_id
    tour.code(f"await get_audit_logs(db, table_name={PROJECT_TABLE!r}, entity_id={ident})")
    logs = await get_audit_logs(tour.db, table_name=PROJECT_TABLE, entity_id=ident)
    logs.reverse()  # oldest first
    for log in logs:
        tour.say(f"{log.occurred_at:%H:%M:%S} {log.action:<11} by {log.user_id:<6} {_change(log)}")
    actions = [log.action for log in logs]
    users = [log.user_id for log in logs]
    tour.check(
        actions == ["CREATE", "UPDATE", "SOFT_DELETE", "RESTORE"],
        "the trail reads CREATE, UPDATE, SOFT_DELETE, RESTORE",
    )
    tour.check(
        users == ["ada", "ada", "grace", "grace"]
        and [log.correlation_id for log in logs[:2]] == [tour.correlation_id] * 2,
        "each entry names who acted, and the first two carry the audit context's correlation id",
    )


async def _metrics(tour: Tour) -> None:
    snap = tour.db.metrics.snapshot()
    queries = snap.get("queries", {})
    transactions = snap.get("transactions", {})
    slow = snap.get("slow_queries", {})
    tour.code("db.metrics.snapshot()")
    tour.say(
        f"{queries.get('total', 0):,} statements timed: p50 {_ms(queries.get('p50_seconds'))}, "
        f"p95 {_ms(queries.get('p95_seconds'))}, slowest {_ms(queries.get('max_seconds'))}; "
        f"{queries.get('errors', 0)} errors."
    )
    tour.say(
        f"Transactions: {transactions.get('committed', 0)} committed, "
        f"{transactions.get('rolled_back', 0)} rolled back; "
        f"{slow.get('count', 0)} slow queries (over {slow.get('threshold_seconds')} s)."
    )
    top = snap.get("statements", {}).get("top", [])
    if top:
        first = top[0]
        tour.say(
            f"Most time went to ({first.get('calls')} calls, "
            f"{_ms(first.get('total_seconds'))}): {_clip(str(first.get('statement')), 70)}"
        )
    tour.check(
        queries.get("total", 0) > 0 and transactions.get("committed", 0) >= 3,
        "the metrics counted the tour's statements and its committed units of work",
    )


def _clip(sql: str, width: int) -> str:
    """``sql`` cut to ``width`` at a word boundary, never inside an identifier."""
    if len(sql) <= width:
        return sql
    cut = sql[:width].rsplit(" ", 1)[0].rstrip(",(")
    return f"{cut} …"


async def _health(tour: Tour) -> None:
    tour.code("report = await db.health_check()")
    report = await tour.db.health_check()
    latency = f"{report.latency_ms:.2f} ms" if report.latency_ms is not None else "n/a"
    tour.say(
        f"healthy={report.healthy}, latency {latency}, backend {report.backend}, "
        f"url {report.url}, pool {_pool(report.pool)}."
    )
    tour.check(report.healthy and report.error is None, "the health report is healthy")


_STEPS: list[tuple[str, Callable[[Tour], Awaitable[None]]]] = [
    ("Connect", _connect),
    ("Migrate the toolkit's tables and create the demo's", _migrate),
    ("A unit of work inside an audit context", _unit_of_work),
    ("A savepoint that rolls back", _savepoint),
    ("Soft delete and restore", _soft_delete),
    (f"Bulk create of {BULK_ROWS:,} rows", _bulk_create),
    ("Offset and keyset pages", _pages),
    ("The audit trail of one entity", _audit_trail),
    ("The metrics snapshot", _metrics),
    ("The health report", _health),
]


# -- small helpers ---------------------------------------------------------------------


def _has_table(conn: Connection, name: str) -> bool:
    return bool(inspect(conn).has_table(name))


def _change(log: AuditLog) -> str:
    """``status: 'draft' -> 'active'`` for the fields a reader cares about."""
    old, new = log.old_values or {}, log.new_values or {}
    fields = [f for f in log.changed_fields or [] if f not in ("id", "created_at", "updated_at")]
    if log.old_values is None:
        return ", ".join(f"{f}={new.get(f)!r}" for f in fields)
    return ", ".join(f"{f}: {old.get(f)!r} -> {new.get(f)!r}" for f in fields)


def _ms(seconds: Any) -> str:
    return f"{seconds * 1000:.2f} ms" if isinstance(seconds, (int, float)) else "n/a"


def _pool(status: dict[str, Any]) -> str:
    shown = {
        k: v for k, v in status.items() if k in ("class", "size", "checked_out") and v is not None
    }
    return ", ".join(f"{k} {v}" for k, v in shown.items()) or "n/a"


if __name__ == "__main__":  # pragma: no cover
    import asyncio

    sys.exit(asyncio.run(run_demo(sys.argv[1] if len(sys.argv) > 1 else None)))
