"""Units of work: atomic changes, savepoints, commit hooks and retried transactions.

Run it with ``python docs/examples/unit_of_work.py`` (``ASYNCDB_URL`` picks the database).
"""

from __future__ import annotations

import asyncio
import decimal

from sqlalchemy import Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    Base,
    ConflictError,
    Repository,
    ValidationError,
    run_tx,
)


class Wallet(Base):
    __tablename__ = "uow_example_wallet"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(50), unique=True)
    balance: Mapped[decimal.Decimal] = mapped_column(Numeric(12, 2))


async def transfer(uow: AsyncUnitOfWork, source: int, target: int, amount: str) -> None:
    """Move money between two wallets; raises (and so rolls back) on overdraft."""
    wallets = uow.get_repository(Wallet)
    value = decimal.Decimal(amount)
    payer = await wallets.get(source)
    if payer.balance < value:
        msg = f"{payer.owner} cannot pay {value}."
        raise ValidationError(msg)
    await wallets.update(source, balance=payer.balance - value)
    payee = await wallets.get(target)
    await wallets.update(target, balance=payee.balance + value)


async def balances(db: AsyncDatabaseManager) -> dict[str, str]:
    return {w.owner: str(w.balance) for w in await Repository(Wallet, db).get_all()}


async def main() -> None:
    async with AsyncDatabaseManager() as db:
        async with db.engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
            await conn.run_sync(Base.metadata.create_all)
        wallets = Repository(Wallet, db)
        ada = await wallets.create(owner="ada", balance=decimal.Decimal("100.00"))
        bob = await wallets.create(owner="bob", balance=decimal.Decimal("20.00"))

        # Commit on a clean exit.
        async with AsyncUnitOfWork(db) as uow:
            await transfer(uow, ada.id, bob.id, "30.00")
        print("after a transfer:", await balances(db))

        # Roll back on an exception: neither update of the failed transfer stays.
        try:
            async with AsyncUnitOfWork(db) as uow:
                await transfer(uow, bob.id, ada.id, "500.00")
        except ValidationError as exc:
            print("refused:", exc)
        print("unchanged:", await balances(db))

        # A savepoint undoes only its block; on_commit runs once the outer unit commits.
        async with AsyncUnitOfWork(db) as uow:
            uow.on_commit(lambda: print("committed: the welcome e-mail can go out"))
            await uow.get_repository(Wallet).create(owner="cyd", balance=decimal.Decimal(5))
            try:
                async with uow.savepoint():
                    await uow.get_repository(Wallet).create(owner="ada", balance=decimal.Decimal(1))
            except ConflictError:
                print("a second 'ada' was refused; 'cyd' is kept")
        print("with cyd:", await balances(db))

        # run_tx runs the whole function again on a serialization failure or deadlock.
        await run_tx(transfer, ada.id, bob.id, "10.00", db=db, user_id="ops")
        print("after run_tx:", await balances(db))


if __name__ == "__main__":
    asyncio.run(main())
