"""``asyncdb demo``: a narrated tour of asyncdb on a real database."""

from __future__ import annotations

import argparse

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from ._manager import AsyncDatabaseManager
from ._models import Base

__all__ = ["configure", "run", "run_demo"]


class DemoNote(Base):
    """The demo's table."""

    __tablename__ = "asyncdb_demo_note"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(200))


def say(message: str) -> None:
    """Print one narrated step."""
    print(message, flush=True)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo command's arguments."""
    from .cli import add_url_argument

    add_url_argument(parser)


async def run(args: argparse.Namespace) -> int:
    """Run the demo from the command line."""
    return await run_demo(args.url)


async def run_demo(url: str | None = None) -> int:
    """Run the tour; returns 0 only when every step did what it printed."""
    db = AsyncDatabaseManager(url)
    async with db:
        say(f"1. Connected to {db.url} ({db.backend}).")
        async with db.engine.begin() as conn:
            await conn.run_sync(
                Base.metadata.create_all, tables=[Base.metadata.tables[DemoNote.__tablename__]]
            )
        say("2. Created the table asyncdb_demo_note.")
        async with db.session() as session:
            note = DemoNote(text="hello from asyncdb")
            session.add(note)
            await session.commit()
            say(f"3. Wrote note #{note.id}.")
        async with db.session() as session:
            again = await session.get(DemoNote, note.id)
            ok = again is not None and again.text == note.text
            say(f"4. Read it back: {again.text if again else None!r}")
        report = await db.health_check()
        say(f"5. Health: healthy={report.healthy} latency={report.latency_ms} ms")
        ok = ok and report.healthy
    say("Demo finished: every step succeeded." if ok else "Demo FAILED.")
    return 0 if ok else 1
