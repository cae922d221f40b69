"""Figures for docs/performance.md: verify_audit_chain on 100k chained rows, and the
memory an export of 1M audit rows takes. Not a test; run it by hand on a scratch database::

    python tools/measure_audit.py postgresql+asyncpg://postgres@127.0.0.1/scratch
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from sqlalchemy import Integer, text
from sqlalchemy.orm import Mapped, mapped_column

from asyncdb import AsyncDatabaseManager, AuditAction, Audited, Base, verify_audit_chain
from asyncdb._audit import audit_row, write_audit_rows
from asyncdb._audit_export import export_audit_logs
from asyncdb._context import AuditContext
from asyncdb._schema import toolkit_metadata

CHAINED = 100_000
EXPORTED = 1_000_000
ENTITIES = 10_000


class Measured(Base, Audited):
    __tablename__ = "measure_item"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    qty: Mapped[int] = mapped_column(Integer, default=0)


def rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Sink:
    """A file that throws the text away but samples the process's memory."""

    def __init__(self) -> None:
        self.peak = rss()
        self.writes = 0

    def write(self, data: str) -> int:
        self.writes += 1
        if self.writes % 1000 == 0:
            self.peak = max(self.peak, rss())
        return len(data)


async def main(url: str) -> None:
    async with AsyncDatabaseManager(url, statement_timeout=None) as db:
        async with db.engine.begin() as conn:
            await conn.run_sync(toolkit_metadata.drop_all)
            await conn.run_sync(toolkit_metadata.create_all)
        ctx = AuditContext.of(user_id="measure")
        start = time.perf_counter()
        per_version = CHAINED // ENTITIES
        for version in range(per_version):
            for first in range(0, ENTITIES, 1000):
                rows = [
                    audit_row(
                        Measured,
                        AuditAction.UPDATE,
                        str(e),
                        ctx,
                        old={"qty": version - 1},
                        new={"qty": version, "note": f"entity {e} version {version}"},
                        changed=["qty", "note"],
                    )
                    for e in range(first, first + 1000)
                ]
                async with db.session() as session:
                    await session.run_sync(write_audit_rows, rows)
                    await session.commit()
        print(f"wrote {CHAINED:,} chained rows in {time.perf_counter() - start:.1f} s")
        for attempt in range(3):
            start = time.perf_counter()
            report = await verify_audit_chain(db)
            took = time.perf_counter() - start
            print(
                f"verify #{attempt + 1}: {report.rows:,} rows, {report.chains:,} chains, "
                f"ok={report.ok}, {took:.2f} s"
            )
        if db.engine.dialect.name != "postgresql":
            return
        async with db.session() as session:
            await session.execute(
                text(
                    "INSERT INTO asyncdb_audit_log (table_name, entity_id, action, occurred_at,"
                    " user_id, new_values) SELECT 'bulk', g::text, 'CREATE', now(), 'u', "
                    "jsonb_build_object('n', g, 'note', repeat('x', 60)) "
                    "FROM generate_series(1, :n) g"
                ),
                {"n": EXPORTED - CHAINED},
            )
            await session.commit()
        sink = Sink()
        before = sink.peak
        start = time.perf_counter()
        count = await export_audit_logs(db, sink, format="jsonl")  # type: ignore[arg-type]
        took = time.perf_counter() - start
        growth = (sink.peak - before) / 2**20
        print(f"export: {count:,} rows in {took:.1f} s, RSS growth {growth:.1f} MiB")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
