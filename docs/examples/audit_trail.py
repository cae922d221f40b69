"""The audit trail: who changed what, read back by user, entity or correlation id.

Run it with ``python docs/examples/audit_trail.py`` (``ASYNCDB_URL`` picks the database).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from sqlalchemy import String, delete
from sqlalchemy.orm import Mapped, mapped_column

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    Audited,
    AuditLog,
    Base,
    Repository,
    audit_context,
    get_audit_logs,
    init_database,
)


class Member(Base, Audited):
    __tablename__ = "audit_example_member"
    # Never copy secrets into the audit log.
    __audit_exclude__ = frozenset({"password_hash"})

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200), default="")


def hash_password(password: str) -> str:
    # Illustration only: use a password hashing library (argon2, bcrypt) in a real app.
    return hashlib.sha256(password.encode()).hexdigest()


async def main() -> None:
    async with AsyncDatabaseManager() as db:
        await init_database(db)
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.run_sync(Base.metadata.create_all)
            # A clean slate: earlier runs' audit rows would reappear under the reused ids.
            await conn.execute(delete(AuditLog).where(AuditLog.table_name == Member.__tablename__))
        members = Repository(Member, db)
        request_id = str(uuid.uuid4())

        # audit_context says who acts for everything inside the block (a web framework
        # middleware does this per request; see asyncdb.fastapi.AuditMiddleware).
        async with audit_context(user_id="admin-7", correlation_id=request_id):
            member = await members.create(
                email="ada@example.org", password_hash=hash_password("one")
            )
            async with AsyncUnitOfWork(db) as uow:
                await uow.get_repository(Member).update(member.id, email="ada@example.com")

        # A unit's own arguments win over the surrounding context.
        async with AsyncUnitOfWork(db, user_id="support-2", correlation_id="ticket-42") as uow:
            await uow.get_repository(Member).update(member.id, password_hash=hash_password("two"))

        for row in reversed(
            await get_audit_logs(db, entity_id=member.id, table_name="audit_example_member")
        ):
            print(
                f"{row.action}: user={row.user_id} correlation={row.correlation_id} "
                f"changed={row.changed_fields} new={row.new_values}"
            )
        same_request = await get_audit_logs(db, correlation_id=request_id)
        print("rows of the request:", len(same_request))


if __name__ == "__main__":
    asyncio.run(main())
