"""Alembic environment of asyncdb's own tables (the audit log), async throughout.

Three ways in, one environment:

* ``asyncdb.migrate(db)`` / ``asyncdb migrate``: the caller's engine hands a connection in
  ``config.attributes["connection"]``, already inside ``AsyncConnection.run_sync``.
* ``alembic upgrade head`` from the repository root (configured by ``[tool.alembic]`` in
  pyproject.toml): the URL comes from ``-x url=...`` or ``ASYNCDB_URL``, and this file opens
  an asyncdb manager itself and runs through ``run_sync``.
* ``--sql``: offline; SQL for the URL's dialect is written out, nothing is connected.

The locking, transactions and autogenerate options live in ``asyncdb._migrate``, shared by
all three (see its docstring).
"""

from __future__ import annotations

import asyncio
import logging

from alembic import context
from sqlalchemy.engine import Connection

from asyncdb import AsyncDatabaseManager
from asyncdb._migrate import configure_offline, env_settings, run_online

config = context.config


def run_migrations_offline() -> None:
    """Write the SQL for the URL's dialect; connect to nothing."""
    configure_offline(context)
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    run_online(context, connection)


async def run_async_migrations() -> None:
    """The ``alembic`` command line: open a short-lived manager and run through run_sync."""
    async with AsyncDatabaseManager(env_settings(context)) as db, db.engine.connect() as conn:
        await conn.run_sync(do_run_migrations)


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
        return
    if config.cmd_opts is not None and not logging.getLogger().handlers:
        # The alembic command line has no alembic.ini logging section here: say what runs.
        logging.basicConfig(format="%(levelname)-5.5s [%(name)s] %(message)s")
        logging.getLogger("alembic").setLevel(logging.INFO)
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
