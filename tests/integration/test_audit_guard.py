"""The append-only option on PostgreSQL, and rows from before the chain (asyncdb_0002)."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import bindparam, delete, insert, text, update

from asyncdb import (
    AsyncDatabaseManager,
    AuditAction,
    AuditLog,
    Base,
    MigrationError,
    QueryError,
    Repository,
    cleanup_audit_logs,
    migrate,
    utcnow,
    verify_audit_chain,
)
from asyncdb._audit import audit_row, write_audit_rows
from asyncdb._context import AuditContext
from asyncdb._models import UTCDateTime
from tests.conftest import fresh_postgres_database
from tests.integration.models import Item


@pytest.fixture
def fresh_pg() -> Iterator[str]:
    with fresh_postgres_database("asyncdb_guard") as url:
        yield url


@pytest.fixture(params=["sqlite-file", "postgres"])
def fresh_any(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite-file":
        return f"sqlite+aiosqlite:///{tmp_path / f'g_{uuid.uuid4().hex[:6]}.db'}"
    return str(request.getfixturevalue("fresh_pg"))


@contextlib.asynccontextmanager
async def migrated(url: str, **options: object) -> AsyncIterator[AsyncDatabaseManager]:
    async with AsyncDatabaseManager(url, connect_retries=1) as db:
        await migrate(db, **options)  # type: ignore[arg-type]
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        yield db


async def refused(db: AsyncDatabaseManager, statement: object) -> str:
    with pytest.raises(QueryError, match="InsufficientPrivilegeError") as caught:
        async with db.session() as session:
            await session.execute(statement)  # type: ignore[call-overload]
    return str(caught.value.__cause__)  # the server's own words


async def test_append_only_refuses_update_delete_truncate_but_not_retention(
    fresh_pg: str,
) -> None:
    async with migrated(fresh_pg, audit_append_only=True) as db:
        item = await Repository(Item, db).create(name="a")
        await Repository(Item, db).update(item.id, name="b")  # writing audit rows still works
        message = await refused(db, update(AuditLog).values(user_id="mallory"))
        assert "asyncdb_audit_log is append-only: UPDATE is refused" in message
        message = await refused(db, delete(AuditLog).where(AuditLog.entity_id == str(item.id)))
        assert "DELETE is refused" in message
        assert "TRUNCATE is refused" in await refused(db, text("TRUNCATE asyncdb_audit_log"))
        old = audit_row(Item, AuditAction.UPDATE, "99", AuditContext(), new={"qty": 1})
        old["occurred_at"] = utcnow() - dt.timedelta(days=40)
        async with db.session() as session:
            await session.run_sync(write_audit_rows, [old])
            await session.commit()
        # Retention is the one way past the trigger.
        assert await cleanup_audit_logs(db, retention_days=30) == 1
        report = await verify_audit_chain(db)
        assert report.ok and report.rows == 3  # two item rows and the checkpoint

        await migrate(db, audit_append_only=False)
        async with db.session() as session:
            await session.execute(update(AuditLog).values(user_id="admin"))
            await session.commit()
        assert not (await verify_audit_chain(db)).ok  # and the chain sees what was done


async def test_append_only_sql_and_refusal_off_postgres(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'refused.db'}"
    async with AsyncDatabaseManager(url) as db:
        with pytest.raises(MigrationError, match="needs PostgreSQL"):
            await migrate(db, audit_append_only=True)
    sql = (
        await migrate("postgresql+asyncpg://u@localhost/x", sql=True, audit_append_only=True)
    ).sql
    assert sql is not None and "CREATE TRIGGER asyncdb_audit_append_only" in sql


async def test_rows_from_before_the_chain_are_counted_as_unchained(fresh_any: str) -> None:
    async with AsyncDatabaseManager(fresh_any, connect_retries=1) as db:
        await migrate(db, revision="asyncdb_0001")
        async with db.session() as session:
            await session.execute(
                text(
                    "INSERT INTO asyncdb_audit_log (table_name, entity_id, action, "
                    "occurred_at) VALUES ('t_item', '1', 'CREATE', :at)"
                ).bindparams(bindparam("at", type_=UTCDateTime())),
                {"at": utcnow()},
            )
            await session.commit()
        assert (await migrate(db)).applied == ("asyncdb_0002",)
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        await Repository(Item, db).create(name="after")
        report = await verify_audit_chain(db)
        assert report.ok and (report.unchained, report.rows) == (1, 1)
        # An unchained row that appears after chaining began is a forgery.
        async with db.session() as session:
            await session.execute(
                insert(AuditLog).values(
                    table_name="t_item", entity_id="5", action="CREATE", occurred_at=utcnow()
                )
            )
            await session.commit()
        broken = (await verify_audit_chain(db)).broken
        assert broken is not None and broken.problem == "unchained"
