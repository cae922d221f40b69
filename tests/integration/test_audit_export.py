"""Streaming export (API and CLI) and ``asyncdb audit verify`` on every backend."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import tracemalloc
from pathlib import Path

import pytest
from sqlalchemy import insert, update

from asyncdb import (
    AsyncDatabaseManager,
    AuditLog,
    Repository,
    ValidationError,
    audit_context,
    export_audit_logs,
    iter_audit_logs,
    utcnow,
)
from asyncdb.cli import main
from tests.integration.conftest import manager_for, reset_schema
from tests.integration.models import Account, Item


async def seed(db: AsyncDatabaseManager) -> None:
    with audit_context(user_id="ann"):
        item = await Repository(Item, db).create(name="a", qty=1)
        await Repository(Item, db).update(item.id, qty=2)
    with audit_context(user_id="bob"):
        await Repository(Account, db).create(email="b@x")


async def test_iter_audit_logs_streams_in_id_order_with_filters(db: AsyncDatabaseManager) -> None:
    start = utcnow()
    await seed(db)
    rows = [row async for row in iter_audit_logs(db, batch_size=1)]
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows) and len(rows) == 3
    assert rows[0]["action"] == "CREATE" and rows[0]["new_values"]["name"] == "a"
    assert rows[0]["row_hash"] and rows[1]["prev_hash"] == rows[0]["row_hash"]
    assert dt.datetime.fromisoformat(rows[0]["occurred_at"]) >= start
    by_user = [r async for r in iter_audit_logs(db, user_id="bob")]
    assert [r["table_name"] for r in by_user] == ["t_account"]
    by_table = [r async for r in iter_audit_logs(db, table_name="t_item", batch_size=2)]
    assert len(by_table) == 2
    assert [r async for r in iter_audit_logs(db, since=utcnow())] == []
    assert len([r async for r in iter_audit_logs(db, until=utcnow(), since=start)]) == 3


async def test_export_writes_jsonl_and_csv(db: AsyncDatabaseManager) -> None:
    await seed(db)
    out = io.StringIO()
    assert await export_audit_logs(db, out) == 3
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["user_id"] for line in lines] == ["ann", "ann", "bob"]
    out = io.StringIO()
    assert await export_audit_logs(db, out, format="csv", table_name="t_item") == 2
    table = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["action"] for r in table] == ["CREATE", "UPDATE"]
    assert json.loads(table[1]["new_values"])["qty"] == 2
    assert table[0]["old_values"] == ""
    with pytest.raises(ValidationError, match="jsonl, csv"):
        await export_audit_logs(db, io.StringIO(), format="xml")
    with pytest.raises(ValidationError, match="since must be a datetime"):
        await export_audit_logs(db, io.StringIO(), since="2026-01-01")
    with pytest.raises(ValidationError, match="table_name must be a string"):
        await export_audit_logs(db, io.StringIO(), table_name=7)


async def _peak_while_streaming(db: AsyncDatabaseManager, rows: int) -> int:
    async with db.session() as session:
        now = utcnow()
        values = [
            {
                "table_name": "t_bulk",
                "entity_id": str(i),
                "action": "CREATE",
                "occurred_at": now,
                "new_values": {"name": "x" * 50, "n": i},
            }
            for i in range(rows)
        ]
        await session.execute(insert(AuditLog), values)
        await session.commit()
    del values
    tracemalloc.start()
    try:
        seen = 0
        async for _ in iter_audit_logs(db, table_name="t_bulk", batch_size=250):
            seen += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == rows
    async with db.session() as session:
        await session.execute(AuditLog.__table__.delete())
        await session.commit()
    return peak


@pytest.mark.slow  # several seconds per backend
async def test_export_memory_does_not_grow_with_the_log(db: AsyncDatabaseManager) -> None:
    small = await _peak_while_streaming(db, 1_000)
    large = await _peak_while_streaming(db, 8_000)
    # Eight times the rows, about the same peak: one batch is held at a time.
    assert large < small * 1.5 + 256 * 1024, (small, large)


# -- the command line (a separate process's view: file SQLite and PostgreSQL) -----------


@pytest.fixture
def cli_url(db_url: str, backend: str) -> str:
    if backend == "sqlite-memory":
        pytest.skip("an in-memory database cannot be shared with the command line")

    async def prepare() -> None:
        db = manager_for(db_url)
        async with db:
            await reset_schema(db)
            await seed(db)

    asyncio.run(prepare())
    return db_url


def test_cli_verify_exits_0_then_1_at_the_broken_link(
    cli_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--url", cli_url]) == 0
    assert "audit chain OK: 3 row(s) in 2 chain(s)" in capsys.readouterr().out

    async def tamper() -> int:
        db = manager_for(cli_url)
        async with db, db.session() as session:
            row = (await session.scalars(AuditLog.__table__.select())).first()
            assert row is not None
            await session.execute(
                update(AuditLog).where(AuditLog.id == row).values(user_id="mallory")
            )
            await session.commit()
            return int(row)

    row_id = asyncio.run(tamper())
    assert main(["audit", "verify", "--url", cli_url]) == 1
    out = capsys.readouterr().out
    assert f"first broken link: audit row {row_id} " in out and "(hash)" in out
    assert main(["audit", "verify", "--url", cli_url, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["broken"]["row_id"] == row_id
    assert main(["audit", "verify", "--url", cli_url, "--table", "t_account"]) == 0


def test_cli_export_filters_and_formats(
    cli_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "audit.csv"
    args = ["audit", "export", "--url", cli_url, "--format", "csv", "--output", str(target)]
    assert main([*args, "--user", "ann"]) == 0
    assert "Exported 2 audit row(s)." in capsys.readouterr().err
    with target.open(newline="") as written:
        assert [r["table_name"] for r in csv.DictReader(written)] == ["t_item", "t_item"]
    assert main(["audit", "export", "--url", cli_url, "--table", "t_account"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["user_id"] for line in lines] == ["bob"]
    assert main(["audit", "export", "--url", cli_url, "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out == ""
    with pytest.raises(SystemExit) as exited:
        main(["audit", "export", "--url", cli_url, "--since", "last tuesday"])
    assert exited.value.code == 2
    assert "ISO 8601" in capsys.readouterr().err
