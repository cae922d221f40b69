"""Adopting toolkit tables made by ``create_all``: check against the head, then stamp."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import text

from asyncdb import AsyncDatabaseManager, MigrationError, migrate, migration_status
from asyncdb._schema import toolkit_metadata


async def create_all_toolkit(url: str) -> None:
    async with AsyncDatabaseManager(url) as db, db.engine.begin() as conn:
        await conn.run_sync(toolkit_metadata.create_all)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asyncdb", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_migrate_over_create_all_tables_says_to_adopt(fresh_url: str) -> None:
    await create_all_toolkit(fresh_url)
    with pytest.raises(MigrationError) as info:
        await migrate(fresh_url)
    message = str(info.value)
    assert "already exist" in message
    assert "asyncdb_audit_log" in message
    assert "asyncdb migrate --adopt" in message
    assert "no toolkit tables" not in message


async def test_adopt_stamps_matching_tables_and_keeps_rows(fresh_url: str) -> None:
    await create_all_toolkit(fresh_url)
    async with AsyncDatabaseManager(fresh_url) as db, db.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO asyncdb_audit_log (table_name, entity_id, action, occurred_at) "
                "VALUES ('t', '1', 'CREATE', CURRENT_TIMESTAMP)"
            )
        )
    result = await migrate(fresh_url, adopt=True)
    assert result.before == ()
    assert result.applied == ()
    status = await migration_status(fresh_url)
    assert status.up_to_date
    assert result.after == status.heads
    again = await migrate(fresh_url)  # nothing left to run
    assert again.applied == ()
    async with AsyncDatabaseManager(fresh_url) as db, db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM asyncdb_audit_log"))).scalar() == 1


async def test_adopt_refuses_tables_that_differ_and_lists_the_differences(fresh_url: str) -> None:
    await create_all_toolkit(fresh_url)
    async with AsyncDatabaseManager(fresh_url) as db, db.engine.begin() as conn:
        await conn.execute(text("DROP INDEX ix_asyncdb_audit_log_user_id"))
        await conn.execute(text("ALTER TABLE asyncdb_audit_log ADD COLUMN extra_note TEXT"))
    with pytest.raises(MigrationError) as info:
        await migrate(fresh_url, adopt=True)
    message = str(info.value)
    assert "were not adopted" in message
    assert "ix_asyncdb_audit_log_user_id" in message
    assert "asyncdb_audit_log.extra_note" in message
    assert not (await migration_status(fresh_url)).current  # nothing recorded


async def test_adopt_on_an_empty_database_says_to_migrate(fresh_url: str) -> None:
    with pytest.raises(MigrationError, match=r"none of the toolkit's tables.*asyncdb migrate"):
        await migrate(fresh_url, adopt=True)


async def test_adopt_on_a_migrated_database_is_a_no_op(fresh_url: str) -> None:
    await migrate(fresh_url)
    result = await migrate(fresh_url, adopt=True)
    assert result.before == result.after
    assert result.applied == ()


@pytest.mark.slow
async def test_cli_adopt(fresh_url: str) -> None:
    await create_all_toolkit(fresh_url)
    failed = cli("migrate", "--url", fresh_url)
    assert failed.returncode == 2
    assert "asyncdb migrate --adopt" in failed.stderr
    done = cli("migrate", "--adopt", "--url", fresh_url)
    assert done.returncode == 0, done.stderr
    assert "Adopted" in done.stdout
    status = cli("migrate", "--status", "--url", fresh_url)
    assert status.returncode == 0
    assert "up to date" in status.stdout
