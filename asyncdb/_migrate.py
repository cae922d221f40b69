"""Run asyncdb's own Alembic migrations (the audit log's tables) from code.

::

    await migrate(db)                      # upgrade to head; returns a MigrationResult
    await migration_status(db)             # current revision(s), head(s), pending ones
    await downgrade(db, "base")            # drop the toolkit's tables again
    print((await migrate(db, sql=True)).sql)   # the SQL, without connecting

The migrations live in ``migrations/`` of a checkout and ship in the wheel as
``asyncdb/_migrations``; :func:`migrations_location` finds them. The code API, the
``asyncdb migrate`` command and ``alembic`` run from the repository share one ``env.py``,
which calls :func:`run_online` or :func:`configure_offline` below.

Guarantees, on both backends:

* One migrator at a time, across processes. PostgreSQL: a session-level
  ``pg_advisory_lock`` on the migrating connection; SQLite: the whole run is one
  ``BEGIN IMMEDIATE`` transaction (asyncdb's engine emits it), the database's own write lock.
  A second caller waits, then finds nothing to do.
* A failed revision leaves the database at the last good one. PostgreSQL: one
  transaction per revision (transactional DDL); SQLite: a SAVEPOINT per revision inside
  the run's transaction, the failed one rolled back and the good ones committed.
* Failures raise :class:`MigrationError` naming the revision, the revision the database is
  at, and the command to run next; never a password.
* The toolkit's history has its own version table, ``asyncdb_alembic_version``, and the
  branch label ``asyncdb``, so it never collides with the application's ``alembic_version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy import Text
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Transaction
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _audit_model  # noqa: F401 - registers the toolkit's tables on toolkit_metadata
from ._capabilities import require
from ._engine import READ_ONLY_OPTION
from ._errors import MigrationError, exception_summary, sqlstate_of
from ._manager import AsyncDatabaseManager
from ._models import UTCDateTime
from ._schema import toolkit_metadata
from ._settings import DatabaseSettings

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
    "MigrationResult",
    "MigrationStatus",
    "alembic_render_item",
    "configure_offline",
    "downgrade",
    "env_settings",
    "migrate",
    "migration_status",
    "migrations_location",
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


def migrations_location() -> Path:
    """The directory of asyncdb's Alembic environment (``env.py``, ``versions/``).

    In an installed wheel it is ``asyncdb/_migrations``; in a source checkout (an editable
    install) it is ``migrations/`` at the repository root.
    """
    package = Path(__file__).resolve().parent
    candidates = (package / "_migrations", package.parent / "migrations")
    for candidate in candidates:
        if (candidate / "env.py").is_file() and (candidate / "versions").is_dir():
            return candidate
    looked = " and ".join(str(c) for c in candidates)
    msg = (
        f"asyncdb's migrations are missing from this installation (looked in {looked}). "
        "Reinstall asyncdb from its wheel, or run from a complete source checkout."
    )
    raise MigrationError(msg)


# -- results ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class MigrationResult:
    """What :func:`migrate` or :func:`downgrade` did.

    ``applied`` lists the revisions whose upgrade (or downgrade) ran, in order; it is
    empty when the database was already there. With ``sql=True`` nothing ran on the
    database: ``sql`` holds the script and ``before``/``after`` are empty.
    """

    url: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    applied: tuple[str, ...]
    sql: str | None = None

    @property
    def changed(self) -> bool:
        """True when at least one revision ran."""
        return bool(self.applied) and self.sql is None


@dataclasses.dataclass(frozen=True, kw_only=True)
class MigrationStatus:
    """Where the database stands: its revision(s), the head(s), and what is pending."""

    url: str
    current: tuple[str, ...]
    heads: tuple[str, ...]
    pending: tuple[str, ...]

    @property
    def up_to_date(self) -> bool:
        """True when every toolkit revision has been applied."""
        return not self.pending

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict."""
        return {
            "url": self.url,
            "current": list(self.current),
            "heads": list(self.heads),
            "pending": list(self.pending),
            "up_to_date": self.up_to_date,
        }


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


# -- public API ------------------------------------------------------------------------


async def migrate(
    db: AsyncDatabaseManager | str | None = None, *, revision: str = "head", sql: bool = False
) -> MigrationResult:
    """Upgrade the toolkit's tables to ``revision`` (default: the newest).

    ``db`` is a connected manager, a URL, or None for the ``ASYNCDB_*`` settings (a URL or
    None opens a short-lived manager). Concurrent callers, in this process or others,
    take turns; the later ones find nothing to do. ``sql=True`` connects to nothing and
    returns the SQL, for the URL's dialect, in ``result.sql``::

        result = await migrate(db)
        print(result.before, "->", result.after)
    """
    if sql:
        return await _offline(_settings_of(db), revision)
    return await _online("upgrade", db, revision)


async def downgrade(db: AsyncDatabaseManager | str | None, revision: str) -> MigrationResult:
    """Downgrade the toolkit's tables to ``revision`` (``"base"`` drops them all).

    ``revision`` may be relative, such as ``"-1"``. Same locking and failure handling
    as :func:`migrate`.
    """
    return await _online("downgrade", db, revision)


async def migration_status(db: AsyncDatabaseManager | str | None = None) -> MigrationStatus:
    """The database's toolkit revision(s), the head(s), and the revisions still to apply.

    Reads only; takes no lock.
    """
    script = ScriptDirectory.from_config(_alembic_config())
    async with _engine_for(db) as (engine, url), engine.connect() as conn:
        reader = await conn.execution_options(**{READ_ONLY_OPTION: True})
        current = await reader.run_sync(_read_heads)
    heads = tuple(sorted(script.get_heads()))
    try:
        ahead = list(script.iterate_revisions(heads, current or None))
    except (CommandError, ResolutionError) as exc:
        msg = (
            f"The database at {url} is at toolkit revision {_describe(current)}, which this "
            "version of asyncdb does not know. Install the asyncdb version that migrated it, "
            "or a newer one."
        )
        raise MigrationError(msg) from exc
    pending = tuple(revision.revision for revision in reversed(ahead))
    return MigrationStatus(url=url, current=current, heads=heads, pending=pending)


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

    PostgreSQL: a session-level advisory lock, one transaction per revision. SQLite: one
    ``BEGIN IMMEDIATE`` transaction with a SAVEPOINT per revision (see the module docstring).
    """
    progress: _Progress = context.config.attributes.get(_PROGRESS) or _Progress()
    options = _context_options()
    require(connection.dialect.name, "migrations")  # DuckDB: a clear error naming it
    # MariaDB/MySQL commit DDL implicitly (no savepoint survives it): PostgreSQL's path,
    # one transaction per revision under a named lock.
    if connection.dialect.name in ("postgresql", "mysql"):
        with _advisory_lock(connection):
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


def _lock_sql(connection: Connection, *, lock: bool) -> str:
    if connection.dialect.name == "mysql":  # a named lock, held by the session
        name = f"'asyncdb_migrate_{ADVISORY_LOCK_KEY}'"
        return f"SELECT GET_LOCK({name}, -1)" if lock else f"SELECT RELEASE_LOCK({name})"
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


# -- plumbing ----------------------------------------------------------------------------

# Alembic installs its EnvironmentContext as a module-global proxy while a command runs,
# so two commands in one process must not interleave (each runs across awaits).
_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _process_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _LOCKS.get(loop)
    if lock is None:
        lock = _LOCKS[loop] = asyncio.Lock()
    return lock


def _alembic_config(output_buffer: io.StringIO | None = None) -> Config:
    # Built in code, never from a file: the application's own alembic.ini or
    # pyproject.toml must not leak into the toolkit's migrations.
    config = Config(output_buffer=output_buffer)
    config.set_main_option("script_location", str(migrations_location()).replace("%", "%%"))
    return config


def _settings_of(db: AsyncDatabaseManager | str | None) -> DatabaseSettings:
    if isinstance(db, AsyncDatabaseManager):
        return db.settings
    return DatabaseSettings(url=db) if isinstance(db, str) else DatabaseSettings.from_env()


@contextlib.asynccontextmanager
async def _engine_for(
    db: AsyncDatabaseManager | str | None,
) -> AsyncIterator[tuple[AsyncEngine, str]]:
    if isinstance(db, AsyncDatabaseManager):
        yield db.engine, db.url
        return
    async with AsyncDatabaseManager(db) as manager:
        yield manager.engine, manager.url


async def _offline(settings: DatabaseSettings, revision: str) -> MigrationResult:
    buffer = io.StringIO()
    config = _alembic_config(output_buffer=buffer)
    progress = _Progress()
    config.attributes[_PROGRESS] = progress
    config.attributes[_OFFLINE_URL] = settings.parsed_url.set(password=None)
    async with _process_lock():
        try:
            command.upgrade(config, revision, sql=True)
        except CommandError as exc:
            raise _refused("upgrade", revision, exc) from exc
    return MigrationResult(
        url=settings.masked_url,
        before=(),
        after=(),
        applied=tuple(progress.applied),
        sql=buffer.getvalue(),
    )


async def _online(
    direction: Literal["upgrade", "downgrade"], db: AsyncDatabaseManager | str | None, revision: str
) -> MigrationResult:
    config = _alembic_config()
    run = command.upgrade if direction == "upgrade" else command.downgrade
    async with _process_lock(), _engine_for(db) as (engine, url), engine.connect() as conn:
        logger.info("Running the toolkit's migrations on %s: %s to %s", url, direction, revision)
        progress = await conn.run_sync(_run_command, config, run, direction, revision, url)
    before = progress.before or ()
    after = progress.heads if progress.applied else before
    if progress.applied:
        logger.info("Migrated %s from %s to %s", url, _describe(before), _describe(after))
    return MigrationResult(url=url, before=before, after=after, applied=tuple(progress.applied))


def _run_command(
    connection: Connection,
    config: Config,
    run: Callable[[Config, str], None],
    direction: str,
    revision: str,
    url: str,
) -> _Progress:
    progress = _Progress()
    config.attributes[_CONNECTION] = connection
    config.attributes[_PROGRESS] = progress
    try:
        run(config, revision)
    except MigrationError:
        raise
    except CommandError as exc:
        raise _refused(direction, revision, exc) from exc
    except Exception as exc:
        raise _failed(connection, config, progress, direction, revision, url, exc) from exc
    return progress


def _refused(direction: str, revision: str, exc: CommandError) -> MigrationError:
    msg = (
        f"Alembic cannot {direction} to {revision!r}: {exc}. "
        "Run `asyncdb migrate --status` to see the current and head revisions."
    )
    return MigrationError(msg)


def _failed(
    connection: Connection,
    config: Config,
    progress: _Progress,
    direction: str,
    revision: str,
    url: str,
    exc: Exception,
) -> MigrationError:
    current = progress.current
    failed = _failing_revision(config, direction, current)
    if failed is not None:
        what = f"Migration {failed}"
    elif current is not None:
        what = f"A migration after revision {_describe(current)}"
    else:
        what = "A migration"
    summary = exception_summary(exc)
    if not summary.endswith("."):
        summary += "."
    at = _heads_after_failure(connection)
    where = (
        f"The database is at revision {_describe(at)}."
        if at is not None
        else "Run `asyncdb migrate --status` to see which revision the database is at."
    )
    again = (
        f"asyncdb migrate --revision {revision}"
        if direction == "upgrade"
        else f"asyncdb migrate --downgrade {revision}"
    )
    msg = (
        f"{what} failed while {direction.rstrip('e')}ing {url}: {summary} {where} "
        f"Fix the migration (or the data it trips over), then run `{again}`."
    )
    return MigrationError(msg, sqlstate=sqlstate_of(exc))


def _failing_revision(
    config: Config, direction: str, current: tuple[str, ...] | None
) -> str | None:
    """The revision that was running: the one after ``current`` (up) or ``current`` (down)."""
    if current is None:
        return None
    if direction == "downgrade":
        return current[0] if len(current) == 1 else None
    try:
        script = ScriptDirectory.from_config(config)
        if not current:
            candidates = list(script.get_bases())
        elif len(current) == 1:
            found = script.get_revision(current[0])
            candidates = sorted(found.nextrev) if found is not None else []
        else:
            return None
    except (CommandError, ResolutionError):
        return None
    return candidates[0] if len(candidates) == 1 else None


def _read_heads(connection: Connection) -> tuple[str, ...]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return tuple(sorted(context.get_current_heads()))


def _heads_after_failure(connection: Connection) -> tuple[str, ...] | None:
    try:
        if connection.in_transaction():
            connection.rollback()
        heads = _read_heads(connection)
        connection.rollback()
    except Exception:
        return None
    return heads


def _describe(heads: tuple[str, ...] | None) -> str:
    if not heads:
        return "base (no toolkit tables)"
    return ", ".join(heads)
