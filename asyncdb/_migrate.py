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
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _audit_model  # noqa: F401 - registers the toolkit's tables on toolkit_metadata
from ._audit_guard import append_only_sql, set_append_only
from ._engine import READ_ONLY_OPTION
from ._errors import MigrationError
from ._manager import AsyncDatabaseManager
from ._migrate_adopt import existing_toolkit_tables, schema_differences, stamp_heads
from ._migrate_env import (
    _CONNECTION,
    _OFFLINE_URL,
    _PROGRESS,
    ADVISORY_LOCK_KEY,
    BRANCH_LABEL,
    VERSION_TABLE,
    _context_options,
    _Progress,
    alembic_render_item,
    configure_offline,
    env_settings,
    run_online,
)
from ._settings import DatabaseSettings
from ._translate import exception_summary, sqlstate_of

if TYPE_CHECKING:
    pass

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


# -- public API ------------------------------------------------------------------------


async def migrate(
    db: AsyncDatabaseManager | str | None = None,
    *,
    revision: str = "head",
    sql: bool = False,
    audit_append_only: bool | None = None,
    adopt: bool = False,
) -> MigrationResult:
    """Upgrade the toolkit's tables to ``revision`` (default: the newest).

    ``db`` is a connected manager, a URL, or None for the ``ASYNCDB_*`` settings (a URL or
    None opens a short-lived manager). Concurrent callers, in this process or others,
    take turns; the later ones find nothing to do. ``sql=True`` connects to nothing and
    returns the SQL, for the URL's dialect, in ``result.sql``::

        result = await migrate(db)
        print(result.before, "->", result.after)

    ``audit_append_only=True`` then makes the audit log reject UPDATE, DELETE and TRUNCATE
    (PostgreSQL; retention still works), ``False`` lifts that, ``None`` leaves it as is.

    ``adopt=True`` takes over toolkit tables made by ``metadata.create_all``: it checks
    that they match the head revision's schema and records the head without running a
    revision (``result.applied`` is empty, ``result.after`` the head). Tables that differ
    raise :class:`MigrationError` listing the differences; nothing is recorded.
    """
    if sql:
        result = await _offline(_settings_of(db), revision)
        if audit_append_only is not None and _settings_of(db).parsed_url.get_backend_name() == (
            "postgresql"
        ):
            statements = append_only_sql(audit_append_only)
            extra = "".join(f"{statement};\n\n" for statement in statements)
            result = dataclasses.replace(result, sql=(result.sql or "") + extra)
        return result
    result = await (_adopt(db) if adopt else _online("upgrade", db, revision))
    if audit_append_only is not None:
        async with _engine_for(db) as (engine, _), engine.begin() as conn:
            await conn.run_sync(set_append_only, audit_append_only)
    return result


async def _adopt(db: AsyncDatabaseManager | str | None) -> MigrationResult:
    script = ScriptDirectory.from_config(_alembic_config())
    async with _process_lock(), _engine_for(db) as (engine, url), engine.begin() as conn:
        return await conn.run_sync(_adopt_on, script, url)


def _adopt_on(connection: Connection, script: ScriptDirectory, url: str) -> MigrationResult:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
    current = _read_heads(connection)
    heads = tuple(sorted(script.get_heads()))
    if current == heads:
        return MigrationResult(url=url, before=current, after=current, applied=())
    if current:
        msg = (
            f"The database at {url} already records toolkit revision {_describe(current)}: "
            "there is nothing to adopt. Run `asyncdb migrate` to upgrade it."
        )
        raise MigrationError(msg)
    if not existing_toolkit_tables(connection):
        msg = (
            f"The database at {url} has none of the toolkit's tables, so there is nothing to "
            "adopt. Run `asyncdb migrate` to create them."
        )
        raise MigrationError(msg)
    differences = schema_differences(connection, _context_options())
    if differences:
        msg = (
            f"The toolkit's tables in {url} do not match head revision {_describe(heads)}, so "
            f"they were not adopted: {'; '.join(differences)}. Bring them in line with the head "
            "(or drop them and run `asyncdb migrate`), then run `asyncdb migrate --adopt`."
        )
        raise MigrationError(msg)
    stamp_heads(connection, script, VERSION_TABLE)
    logger.info("Adopted the toolkit's tables on %s at %s", url, _describe(heads))
    return MigrationResult(url=url, before=(), after=heads, applied=())


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
    made_outside = _unrecorded_tables(connection) if direction == "upgrade" and at == () else []
    if made_outside:
        msg = (
            f"{what} failed while upgrading {url}: the toolkit's tables "
            f"({', '.join(made_outside)}) already exist, but no toolkit revision is recorded: "
            "they were made outside the migrations (by metadata.create_all, say). Run "
            "`asyncdb migrate --adopt` (or migrate(adopt=True)) to check them against the "
            "head revision and record it."
        )
        return MigrationError(msg, sqlstate=sqlstate_of(exc))
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


def _unrecorded_tables(connection: Connection) -> list[str]:
    try:
        tables = existing_toolkit_tables(connection)
        connection.rollback()
    except Exception:
        return []
    return tables


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
        return "base (no toolkit revision recorded)"
    return ", ".join(heads)
