"""Quick start: a model, a manager, a repository, a unit of work and the audit trail.

Run it with ``python docs/examples/quickstart.py``. It uses ``ASYNCDB_URL`` when set,
else the SQLite file ``./asyncdb.sqlite3``.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import String, delete
from sqlalchemy.orm import Mapped, mapped_column

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    Audited,
    AuditLog,
    Base,
    Repository,
    SoftDeleteMixin,
    TimestampMixin,
    get_audit_logs,
    init_database,
)


class Book(Base, TimestampMixin, SoftDeleteMixin, Audited):
    __tablename__ = "quickstart_book"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author: Mapped[str] = mapped_column(String(100))
    year: Mapped[int]


async def main() -> None:
    async with AsyncDatabaseManager() as db:  # settings from ASYNCDB_* variables
        await init_database(db)  # the toolkit's tables (the audit log), by migration
        async with db.engine.begin() as conn:  # the app's tables (use Alembic in real apps)
            await conn.run_sync(Base.metadata.drop_all)
            await conn.run_sync(Base.metadata.create_all)
            # A clean slate: earlier runs' audit rows would reappear under the reused ids.
            await conn.execute(delete(AuditLog).where(AuditLog.table_name == Book.__tablename__))

        books = Repository(Book, db)
        # Each call on a plain repository is its own transaction.
        dune = await books.create(title="Dune", author="Herbert", year=1965)
        await books.bulk_create(
            [
                {"title": "Neuromancer", "author": "Gibson", "year": 1984},
                {"title": "Hyperion", "author": "Simmons", "year": 1989},
                {"title": "Foundation", "author": "Asimov", "year": 1951},
            ]
        )
        print("books:", await books.count())

        # Filters are field=value or field__op=value, checked before any SQL runs.
        modern = await books.find_by(year__gte=1980, order_by="year")
        print("since 1980:", [b.title for b in modern])
        page = await books.paginate(page=1, page_size=2, order_by="-year")
        print(f"page 1 of {page.pages}:", [b.title for b in page.items])

        # Several changes, one transaction: all of them or none.
        async with AsyncUnitOfWork(db, user_id="librarian-1") as uow:
            repo = uow.get_repository(Book)
            await repo.update(dune.id, year=1966)
            foundation = await repo.find_one_by(title="Foundation")
            assert foundation is not None
            await repo.delete(foundation.id)  # soft: hidden from reads, kept in the table
        print("after the unit:", await books.count(), "visible books")

        # Who changed what: every write above left an audit row in the same transaction.
        for row in reversed(await get_audit_logs(db, table_name="quickstart_book", limit=10)):
            print(f"audit: {row.action:<11} #{row.entity_id} by {row.user_id}")


if __name__ == "__main__":
    asyncio.run(main())
