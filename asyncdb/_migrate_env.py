"""The Alembic side of asyncdb's migrations: what ``env.py`` runs (locking, transactions,
autogenerate options) and the constants it shares with :mod:`asyncdb._migrate`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from alembic.runtime.migration import MigrationContext
from sqlalchemy import Text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Transaction

from . import _audit_model  # noqa: F401 - registers the toolkit's tables on toolkit_metadata
from ._errors import MigrationError
from ._models import UTCDateTime
from ._schema import toolkit_metadata
from ._settings import DatabaseSettings
from ._translate import sqlstate_of

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext
    from alembic.runtime.environment import (
        EnvironmentContext,
        NameFilterParentNames,
        OnVersionApplyFn,
    )
    from alembic.runtime.migration import MigrationInfo

__all__ = [
    "ADVISORY_LOCK_KEY",
    "BRANCH_LABEL",
    "VERSION_TABLE",
    "alembic_render_item",
    "configure_offline",
    "env_settings",
    "run_online",
]

logger = logging.getLogger("asyncdb")

#: The toolkit's Alembic version table (the application keeps ``alembic_version``).
VERSION_TABLE = "asyncdb_alembic_version"
#: Branch label of the toolkit's revisions (``asyncdb@head`` in a chained history).
BRANCH_LABEL = "asyncdb"
#: ``pg_advisory_lock`` key held while migrating: "asyncdb" in ASCII, as a 64-bit integer.
ADVISORY_LOCK_KEY = int.from_bytes(b"asyncdb\x00", "big")

# config.attributes keys shared with env.py
_CONNECTION = "connection"
_PROGRESS = "asyncdb_progress"
_OFFLINE_URL = "asyncdb_offline_url"
# SQLSTATEs of a lock wait cut short: statement_timeout, lock_timeout.
_LOCK_WAIT_STATES = frozenset({"57014", "55P03"})


@dataclasses.dataclass
class _Progress:
    """Filled in by env.py while Alembic runs: where the run started and what it applied."""

    before: tuple[str, ...] | None = None
    heads: tuple[str, ...] = ()
    applied: list[str] = dataclasses.field(default_factory=list)

    def record(
        self,
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        # For a downgrade step too, up_revision_id is the revision whose script ran.
        self.applied.append(step.up_revision_id or ",".join(step.up_revision_ids))
        self.heads = tuple(sorted(heads))

    @property
    def current(self) -> tuple[str, ...] | None:
        return self.heads if self.applied else self.before


def alembic_render_item(
    type_: str, obj: Any, autogen_context: AutogenContext
) -> str | Literal[False]:
    """``render_item`` hook for autogenerate: asyncdb's column types as importable code.

    Pass it to ``context.configure(render_item=alembic_render_item)``. It writes
    ``UTCDateTime`` as ``sa.DateTime(timezone=True)`` (its storage), so migrations never
    import asyncdb's private modules; and the JSONB variant of the audit log's JSON
    columns as ``postgresql.JSONB(astext_type=sa.Text())``, which Alembic otherwise
    renders without the ``sa.`` prefix when it autogenerates against SQLite.
    """
    if type_ != "type":
        return False
    prefix = autogen_context.opts.get("sqlalchemy_module_prefix") or "sa."
    if isinstance(obj, UTCDateTime):
        return f"{prefix}DateTime(timezone=True)"
    if isinstance(obj, postgresql.JSONB) and type(obj.astext_type) is Text:
        if autogen_context.imports is not None:
            autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return f"postgresql.JSONB(astext_type={prefix}Text())"
    return False


# -- env.py side -------------------------------------------------------------------------


def _include_name(name: str | None, type_: str, parent_names: NameFilterParentNames) -> bool:
    # The application's tables share the database: autogenerate must not see them.
    if type_ == "table":
        return name in toolkit_metadata.tables
    return True


def _context_options() -> dict[str, Any]:
    return {
        "target_metadata": toolkit_metadata,
        "version_table": VERSION_TABLE,
        "include_name": _include_name,
        "render_item": alembic_render_item,
        "compare_type": True,
        # SQLite has few ALTERs; autogenerate renders batch operations for it.
        "render_as_batch": True,
        # asyncdb's SQLite engine runs DDL in real transactions, as PostgreSQL does.
        "transactional_ddl": True,
    }


def env_settings(context: EnvironmentContext) -> DatabaseSettings:
    """Settings for ``alembic`` run from the repository: ``-x url=...``, else ``ASYNCDB_*``."""
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url is None:
        url = context.config.get_alembic_option("sqlalchemy.url")
    return DatabaseSettings.from_env(url=url) if url else DatabaseSettings.from_env()


def configure_offline(context: EnvironmentContext) -> None:
    """Configure ``--sql`` mode: SQL for the URL's dialect, no connection."""
    url = context.config.attributes.get(_OFFLINE_URL)
    if url is None:
        url = env_settings(context).parsed_url.set(password=None)
    progress = context.config.attributes.get(_PROGRESS) or _Progress()
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,
        on_version_apply=progress.record,
        **_context_options(),
    )


def run_online(context: EnvironmentContext, connection: Connection) -> None:
    """Run the Alembic command on ``connection`` (inside ``run_sync``), one migrator at a time.

    PostgreSQL, MariaDB/MySQL: a session-level lock (advisory lock; ``GET_LOCK``), one
    transaction per revision (MariaDB commits DDL implicitly, so no SAVEPOINT would
    survive it). DuckDB: one transaction per revision; the database file admits one
    process at a time, so no lock is needed. SQLite: one ``BEGIN IMMEDIATE`` transaction
    with a SAVEPOINT per revision (see the module docstring).
    """
    progress: _Progress = context.config.attributes.get(_PROGRESS) or _Progress()
    options = _context_options()
    name = connection.dialect.name
    if name in ("postgresql", "mysql", "mariadb", "duckdb"):
        lock = _advisory_lock(connection) if name != "duckdb" else contextlib.nullcontext()
        with lock:
            context.configure(
                connection=connection,
                transaction_per_migration=True,
                on_version_apply=progress.record,
                **options,
            )
            progress.before = _context_heads(context)
            with context.begin_transaction():
                context.run_migrations()
        return
    # Begun before configure(), so Alembic sees an external transaction and leaves it to us.
    outer = _begin_immediate(connection)
    savepoints = _Savepoints(connection)
    try:
        context.configure(
            connection=connection,
            on_version_apply=savepoints.after(progress.record),
            **options,
        )
        progress.before = _context_heads(context)
        with context.begin_transaction():
            context.run_migrations()
        savepoints.release()
        outer.commit()
    except BaseException:
        # Undo the failed revision only; keep the ones that succeeded.
        try:
            savepoints.rollback()
            outer.commit()
        except Exception:
            with contextlib.suppress(Exception):
                outer.rollback()
        raise


def _begin_immediate(connection: Connection) -> Transaction:
    # asyncdb's SQLite engine emits BEGIN IMMEDIATE: the file's write lock, for the whole
    # run. The wait for it is bounded by busy_timeout.
    try:
        return connection.begin()
    except sa_exc.OperationalError as exc:
        if connection.in_transaction():
            connection.rollback()
        if "locked" not in str(exc.orig).lower():
            raise
        msg = (
            "Timed out waiting for the database's write lock, which another process holds "
            "(perhaps while it migrates). Run `asyncdb migrate` again once it has finished, "
            "or raise busy_timeout to wait longer."
        )
        raise MigrationError(msg) from exc


class _Savepoints:
    """One SAVEPOINT per revision, advanced by Alembic's ``on_version_apply`` hook."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._current = connection.begin_nested()

    def after(self, record: OnVersionApplyFn) -> OnVersionApplyFn:
        """``record``, then a fresh SAVEPOINT for the next revision."""

        def advance(
            ctx: MigrationContext,
            step: MigrationInfo,
            heads: Collection[Any],
            run_args: Mapping[str, Any],
        ) -> None:
            record(ctx, step, heads, run_args)
            self._current.commit()
            self._current = self._connection.begin_nested()

        return advance

    def release(self) -> None:
        self._current.commit()

    def rollback(self) -> None:
        if self._current.is_active:
            self._current.rollback()


#: Seconds GET_LOCK waits for the MariaDB/MySQL migration lock (a day).
_MYSQL_LOCK_WAIT = 86_400


def _lock_sql(connection: Connection, *, lock: bool) -> str:
    if connection.dialect.name in ("mysql", "mariadb"):
        # A named lock, held by the session. Names are server-wide: one per database, as
        # PostgreSQL's advisory locks are.
        name = "CONCAT('asyncdb_migrate:', DATABASE())"
        # MariaDB refuses an unbounded (-1) wait; statement_timeout bounds it anyway.
        wait = f"GET_LOCK({name}, {_MYSQL_LOCK_WAIT})"
        return f"SELECT {wait}" if lock else f"SELECT RELEASE_LOCK({name})"
    verb = "lock" if lock else "unlock"
    return f"SELECT pg_advisory_{verb}({ADVISORY_LOCK_KEY})"


@contextlib.contextmanager
def _advisory_lock(connection: Connection) -> Iterator[None]:
    # Session-level, so it spans the per-revision transactions; the wait is bounded by
    # the connection's statement_timeout.
    try:
        connection.exec_driver_sql(_lock_sql(connection, lock=True))
    except sa_exc.DBAPIError as exc:
        connection.rollback()
        if sqlstate_of(exc) in _LOCK_WAIT_STATES:
            msg = (
                "Timed out waiting for the migration lock, which another process holds while "
                "it migrates this database. Run `asyncdb migrate` again once it has finished, "
                "or raise statement_timeout to wait longer."
            )
            raise MigrationError(msg, sqlstate=sqlstate_of(exc)) from exc
        raise
    connection.commit()
    try:
        yield
    finally:
        try:
            if connection.in_transaction():
                connection.rollback()
            connection.exec_driver_sql(_lock_sql(connection, lock=False))
            connection.commit()
        except Exception:
            # The lock lives as long as the session: never return it to the pool locked.
            logger.warning("Could not release the migration lock; discarding the connection")
            connection.invalidate()


def _context_heads(context: EnvironmentContext) -> tuple[str, ...]:
    return tuple(sorted(context.get_context().get_current_heads()))
