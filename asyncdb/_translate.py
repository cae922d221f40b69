"""The one place that translates driver errors into asyncdb's (see :mod:`._errors`).

:func:`translate` maps any exception to the most specific asyncdb class, and
:func:`exception_chain` is the one walk down an exception's causes. MariaDB/MySQL and
DuckDB errors are read through :mod:`._driver_errors`, which says what SQLSTATE each
stands for. The retry decisions (connect, ``run_tx``, the repeat of a standalone read)
are ``isinstance`` checks on what :func:`classify` returns.

Every message is written here from the error's class and constraint name, not from the
driver's text; :func:`scrub_values` takes row values out of the driver's own messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn

from sqlalchemy import exc as sa_exc

from ._driver_errors import VALUE_BEARING_TEXT, DriverFacts, driver_facts
from ._errors import (
    AsyncDBError,
    ConfigurationError,
    ConflictError,
    ConnectionLostError,
    DatabaseUnavailableError,
    DataError,
    PoolTimeoutError,
    QueryError,
    RetryableError,
    TransactionError,
    UnsupportedFeatureError,
    ValidationError,
)
from ._models import Base

__all__ = [
    "RETRYABLE_SQLSTATES",
    "TRANSLATED",
    "classify",
    "exception_chain",
    "exception_summary",
    "scrub_values",
    "sqlstate_of",
    "translate",
    "translate_errors",
]

#: asyncio.TimeoutError is the builtin TimeoutError from Python 3.11 on, a distinct class
#: before (asyncpg raises it for a connect or command that timed out).
_TIMEOUTS: tuple[type[BaseException], ...] = (TimeoutError, asyncio.TimeoutError)

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


_SQLITE_CONSTRAINT = re.compile(
    r"(UNIQUE|FOREIGN KEY|NOT NULL|CHECK) constraint failed(?::\s*(.+))?"
)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it wraps: SQLAlchemy's ``.orig``, else ``__cause__``.

    The one walk down an exception's causes; stops on a cycle.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def sqlstate_of(exc: BaseException) -> str | None:
    """Return the SQLSTATE carried by ``exc`` or anything it wraps, if any.

    MariaDB/MySQL and DuckDB errors carry none: the one they stand for is read from
    their error number or class (:func:`._driver_errors.driver_facts`).
    """
    for current in exception_chain(exc):
        # First: asyncmy also carries MySQL's own SQLSTATE, coarser (23000 for any
        # integrity error, HY000 for a lock wait timeout).
        facts = driver_facts(current)
        if facts is not None and facts.sqlstate is not None:
            return facts.sqlstate
        for attr in ("sqlstate", "pgcode"):
            code = getattr(current, attr, None)
            if isinstance(code, str) and len(code) == 5:
                return code
    return None


def _facts_of(exc: BaseException) -> DriverFacts | None:
    """The :class:`DriverFacts` of the first MariaDB/MySQL or DuckDB error in the chain."""
    for current in exception_chain(exc):
        facts = driver_facts(current)
        if facts is not None:
            return facts
    return None


def _named_constraint_columns(name: str) -> tuple[str, ...]:
    """The columns of the unique constraint or index ``name`` of the application's models.

    MariaDB/MySQL name the violated key but not its columns.
    """
    for table in Base.metadata.tables.values():
        for constraint in table.constraints:
            if constraint.name == name:
                return tuple(column.name for column in getattr(constraint, "columns", ()))
        for index in table.indexes:
            if index.name == name:
                return tuple(column.name for column in index.columns)
    return ()


def _driver_error(exc: BaseException) -> BaseException | None:
    """The innermost driver exception (asyncpg's, sqlite3's) under a SQLAlchemy error."""
    orig = getattr(exc, "orig", None)
    if not isinstance(orig, BaseException):
        return None
    return orig.__cause__ if orig.__cause__ is not None else orig


def _attr(exc: BaseException | None, name: str) -> str | None:
    value = getattr(exc, name, None)
    return value if isinstance(value, str) else None


_KEY_COLUMNS = re.compile(r"Key \(([^)]*)\)=")
_MISSING_TABLE = re.compile(
    r"no such table: (\S+)"
    r'|relation "([^"]+)" does not exist'
    r"|Table '(?:[^'.]*\.)?([^']+)' doesn't exist"  # MariaDB/MySQL 1146
    r"|Table with name (\S+) does not exist"  # DuckDB
)


def _constraint_columns(exc: BaseException) -> tuple[str, ...]:
    """The columns a unique/foreign-key violation names, read before values are scrubbed.

    PostgreSQL: the DETAIL ``Key (a, b)=(...)``; SQLite: ``UNIQUE constraint failed: t.a, t.b``.
    """
    driver = _driver_error(exc)
    facts = _facts_of(exc)
    if facts is not None:
        if facts.columns:
            return facts.columns
        return _named_constraint_columns(facts.constraint) if facts.constraint else ()
    detail = _attr(driver, "detail") or ""
    match = _KEY_COLUMNS.search(detail)
    if match:
        return tuple(name.strip().strip('"') for name in match.group(1).split(","))
    match = _SQLITE_CONSTRAINT.search(str(driver) if driver is not None else "")
    if match and match.group(1) == "UNIQUE" and match.group(2):
        return tuple(part.strip().rpartition(".")[2] for part in match.group(2).split(","))
    return ()


def _integrity_error(exc: BaseException, columns: tuple[str, ...] = ()) -> AsyncDBError:
    driver = _driver_error(exc)
    state = sqlstate_of(exc)
    facts = _facts_of(exc)
    constraint = _attr(driver, "constraint_name") or (facts.constraint if facts else None)
    table = _attr(driver, "table_name")
    kind: str | None = None
    target = constraint or ""
    match = _SQLITE_CONSTRAINT.search(str(driver) if driver is not None else "")
    if match:
        kind = match.group(1)
        target = target or (match.group(2) or "")
    elif state == "23505":
        kind = "UNIQUE"
    elif state == "23503":
        kind = "FOREIGN KEY"
    elif state == "23502":
        kind = "NOT NULL"
    elif state == "23514":
        kind = "CHECK"
    where = f" on {table}" if table else ""
    name = f" ({target})" if target else ""
    if kind == "UNIQUE":
        msg = (
            f"A row with the same unique value already exists{where}{name}. "
            "Use a different value, or update the existing row (upsert) instead."
        )
        return ConflictError(
            msg, sqlstate=state or "23505", constraint=target or None, columns=columns
        )
    if kind == "FOREIGN KEY":
        msg = (
            f"A foreign-key constraint rejected the change{where}{name}. "
            "Create the referenced row first, or remove the rows that still refer to it."
        )
        return ConflictError(
            msg, sqlstate=state or "23503", constraint=target or None, columns=columns
        )
    if kind == "NOT NULL":
        msg = f"A required column was left empty{where}{name}. Give it a value."
        return ValidationError(msg, sqlstate=state or "23502")
    if kind == "CHECK":
        msg = f"A CHECK constraint rejected the value{where}{name}. Change the value to satisfy it."
        return ValidationError(msg, sqlstate=state or "23514")
    msg = f"The database rejected the change with an integrity error{where}{name}. Check the data."
    return ConflictError(msg, sqlstate=state, constraint=target or None)


#: SQLSTATEs of a connection the server ended (admin or crash shutdown).
_LOST_STATES = frozenset({"57P01", "57P02"})
#: SQLSTATEs of a server that cannot take the connection (starting up, too many clients).
_UNAVAILABLE_STATES = frozenset({"57P03", "53300"})
#: SQLSTATE 08001, "unable to establish connection": never opened, so not lost.
_CANNOT_CONNECT_STATE = "08001"
#: Bad credentials or an unknown database: they will not fix themselves.
_AUTH_STATE_PREFIX = "28"
_AUTH_STATES = frozenset({"3D000"})


def _connection_failure(exc: BaseException, state: str | None) -> type[AsyncDBError] | None:
    """ConnectionLostError for a connection that broke, DatabaseUnavailableError for one
    that could not be opened, None when ``exc`` is not about the connection."""
    if state == _CANNOT_CONNECT_STATE:
        return DatabaseUnavailableError
    if state is not None and (state.startswith("08") or state in _LOST_STATES):
        return ConnectionLostError
    if state in _UNAVAILABLE_STATES:
        return DatabaseUnavailableError
    unavailable = False
    for current in exception_chain(exc):
        name = type(current).__name__
        if (
            (isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated)
            or isinstance(current, (sa_exc.DisconnectionError, ConnectionError))
            or name == "ConnectionDoesNotExistError"
            or (name == "InterfaceError" and "closed" in str(current).lower())
        ):
            return ConnectionLostError
        if isinstance(current, (*_TIMEOUTS, OSError)) or name == "CannotConnectNowError":
            unavailable = True
    return DatabaseUnavailableError if unavailable else None


# SQLSTATE class 22, "data exception": what each common code means, for the message.
_DATA_STATES = {
    "22001": "the value is too long for the column",
    "22003": "the number is out of range for the column",
    "22007": "the date or time is not valid",
    "22008": "the date or time is out of range",
    "22012": "division by zero",
    "22021": "the text holds a character the database cannot store (a NUL byte?)",
    "22P02": "the value is not valid for the column's type",
    "22P05": "the text holds a character the database cannot store",
}
# SQLite's SQLITE_TOOBIG (18) and SQLITE_MISMATCH (20).
_SQLITE_DATA_CODES = frozenset({18, 20})


def _data_error(exc: BaseException, state: str | None) -> DataError | None:
    driver = _driver_error(exc)
    what: str | None = None
    if state is not None and state.startswith("22"):
        what = _DATA_STATES.get(state, "the value is not valid for the column")
    elif driver is not None and type(driver).__name__ == "DataError" and state is None:
        what = "the value does not fit the column's type"  # asyncpg, before sending
    elif driver is not None and type(driver).__module__ == "sqlite3":
        code = getattr(driver, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_DATA_CODES:
            what = "the value does not fit the column"
    if what is None:
        return None
    column = _attr(driver, "column_name")
    where = f" for column {column!r}" if column else ""
    msg = (
        f"The database rejected a value{where}: {what}. Check the value's type, length "
        "and range against the column."
    )
    return DataError(msg, sqlstate=state, column=column)


# SQLITE_BUSY and SQLITE_LOCKED (primary result codes; extended codes keep them in the
# low byte).
_SQLITE_BUSY_CODES = frozenset({5, 6})


def _is_sqlite_busy(exc: BaseException) -> bool:
    driver = _driver_error(exc)
    if driver is None or type(driver).__module__ != "sqlite3":
        return False
    code = getattr(driver, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_BUSY_CODES
    text = str(driver).lower()
    return "database is locked" in text or "database table is locked" in text


_VALUE_BEARING_DETAIL = re.compile(r"Key \(|Failing row contains|\)=\(")
# Text that quotes row values inside a driver's message, kept up to the value:
# PostgreSQL's DETAIL line (asyncpg folds it into str(exc)), asyncpg's client-side
# "invalid input for query argument $1: 'abc' (...)".
_VALUE_BEARING_TEXT = (
    re.compile(r"(\n?DETAIL:\s+)(Key \(|Failing row contains)[^\n]*"),
    re.compile(r"(invalid input for query argument \$\d+):[^\n]*"),
)
_HIDDEN = "[row values hidden by asyncdb]"


def _redact(text: str) -> str:
    for pattern in _VALUE_BEARING_TEXT:
        text = pattern.sub(lambda m: f"{m.group(1)}{_HIDDEN}", text)
    for pattern, replacement in VALUE_BEARING_TEXT:
        text = pattern.sub(replacement, text)
    return text


def scrub_values(exc: BaseException) -> None:
    """Remove row values from the exceptions in ``exc``'s chain, in place.

    asyncpg renders the server's DETAIL (``Key (email)=(ada@example.com) already
    exists``) into ``str(exc)``, and SQLAlchemy 2.0 copies that text into the messages
    of its own wrappers when it builds them, and keeps the statement's ``params``; any
    traceback or log of the chain would carry the value. DETAIL attributes are cleared,
    value-bearing text in every message is redacted, and ``params`` dropped. The
    constraint name and SQLSTATE stay.
    """
    for current in exception_chain(exc):
        detail = getattr(current, "detail", None)
        if isinstance(detail, str) and _VALUE_BEARING_DETAIL.search(detail):
            with contextlib.suppress(AttributeError):  # a read-only attribute
                current.detail = None  # type: ignore[attr-defined]
        if isinstance(current, sa_exc.StatementError):
            current.params = None
        if any(isinstance(arg, str) for arg in current.args):
            with contextlib.suppress(AttributeError, TypeError):
                current.args = tuple(
                    _redact(arg) if isinstance(arg, str) else arg for arg in current.args
                )


def translate(exc: BaseException) -> BaseException:
    """Map a SQLAlchemy or driver exception to the most specific asyncdb error.

    Anything that is not a database error (including asyncdb's own) is returned as is.
    """
    if isinstance(exc, AsyncDBError):
        return exc
    # MySQL reports a NOT NULL column without a default (1364) as an OperationalError.
    integrity = isinstance(exc, sa_exc.IntegrityError) or (
        isinstance(exc, sa_exc.DBAPIError) and (sqlstate_of(exc) or "").startswith("23")
    )
    columns = _constraint_columns(exc) if integrity else ()
    if isinstance(exc, (OverflowError, UnicodeEncodeError)):
        # Raised by the driver while binding a value (SQLite: an int beyond 64 bits, a
        # lone surrogate). The messages quote the value: say what, not which.
        what = "a number too large" if isinstance(exc, OverflowError) else "a lone surrogate"
        msg = f"The driver could not send a value ({what}) to the database. Check the value."
        return DataError(msg)
    scrub_values(exc)
    if isinstance(exc, sa_exc.TimeoutError):
        msg = (
            "No pooled connection became free within pool_timeout. Raise pool_size or "
            "max_overflow, shorten transactions, or look for connections held too long."
        )
        return PoolTimeoutError(msg)
    facts = _facts_of(exc)
    if facts is not None and facts.unsupported is not None:
        return _unsupported(facts.unsupported)
    if integrity:
        return _integrity_error(exc, columns)
    state = sqlstate_of(exc)
    if state is not None and (state.startswith(_AUTH_STATE_PREFIX) or state in _AUTH_STATES):
        msg = (
            "The server rejected the credentials or the database name. Check the user, "
            "password and database in the URL."
        )
        return ConfigurationError(msg, sqlstate=state)
    if state in RETRYABLE_SQLSTATES:
        what = "deadlock" if state == "40P01" else "serialization failure"
        if facts is not None and facts.retry_reason is not None:
            what = facts.retry_reason
        msg = (
            f"The transaction was aborted by a {what}. Run the whole transaction again; "
            "asyncdb.run_tx does this for you."
        )
        return RetryableError(msg, sqlstate=state)
    if _is_sqlite_busy(exc):
        msg = (
            "The SQLite database stayed locked by another writer for busy_timeout. Run the "
            "transaction again (asyncdb.run_tx does), shorten write transactions, or raise "
            "busy_timeout."
        )
        return RetryableError(msg)
    data_error = _data_error(exc, state)
    if data_error is not None:
        return data_error
    if state == "57014":
        msg = (
            "The statement was cancelled because it ran past statement_timeout. Make the query "
            "cheaper (an index, a smaller batch) or raise statement_timeout."
        )
        return QueryError(msg, sqlstate=state)
    if state == "53300":
        msg = (
            "The database server refused the connection: it has too many clients. Lower "
            "pool_size/max_overflow across your processes, or put pgbouncer in front."
        )
        return DatabaseUnavailableError(msg, sqlstate=state)
    if state == "25006":
        msg = "A write was attempted in a read-only transaction. Use a read-write session or unit."
        return TransactionError(msg, sqlstate=state)
    failure = _connection_failure(exc, state)
    if failure is not None:
        msg = (
            "The connection to the database was lost or could not be opened. Check that the "
            "server is running and reachable; the operation was not completed."
        )
        return failure(msg, sqlstate=state)
    if isinstance(exc, sa_exc.DBAPIError):
        driver = _driver_error(exc)
        missing = _MISSING_TABLE.search(str(driver) if driver is not None else "")
        if missing:
            table = next(group for group in missing.groups() if group is not None)
            return _missing_table(table, state)
        kind = type(driver).__name__ if driver is not None else type(exc).__name__
        msg = f"The database rejected the statement ({kind}). Check the SQL and the schema."
        return QueryError(msg, sqlstate=state)
    return exc


def _unsupported(feature: str) -> UnsupportedFeatureError:
    msg = (
        f"DuckDB does not support {feature}. Restructure the work without it, or use a "
        "backend that has it (see the capability table in docs/backends.md)."
    )
    return UnsupportedFeatureError(msg, sqlstate="0A000", feature=feature, backend="duckdb")


def _missing_table(table: str, state: str | None) -> QueryError:
    if table.startswith("asyncdb_"):
        msg = (
            f"The toolkit table {table} does not exist in this database. Create the toolkit's "
            "tables with `asyncdb migrate` or `await init_database(db)` at start-up."
        )
    else:
        msg = (
            f"The table {table} does not exist in this database. Create it (run your "
            "migrations, or metadata.create_all) before using it."
        )
    return QueryError(msg, sqlstate=state)


def classify(exc: BaseException) -> type[BaseException]:
    """The class of the asyncdb error ``exc`` stands for (its own class if none).

    An asyncdb error built by hand around a more specific cause (``raise
    DatabaseUnavailableError(...) from dropped``) is classified by that cause.
    """
    if isinstance(exc, AsyncDBError):
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, AsyncDBError):
            found = translate(cause)
            if isinstance(found, type(exc)):
                return type(found)
        return type(exc)
    return type(translate(exc))


#: What :func:`translate` maps: SQLAlchemy's errors, socket errors and timeouts (a connect
#: that timed out), and what a driver raises while binding a value it cannot send (an int
#: beyond 64 bits, a lone surrogate).
TRANSLATED: tuple[type[BaseException], ...] = (
    sa_exc.SQLAlchemyError,
    OSError,
    *_TIMEOUTS,
    OverflowError,
    UnicodeEncodeError,
)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise SQLAlchemy and driver errors as asyncdb errors, chained with ``from``."""
    try:
        yield
    except TRANSLATED as exc:
        mapped: Any = translate(exc)
        if mapped is exc:
            raise
        raise mapped from exc


#: The drivers whose own exceptions can reach a caller unwrapped: asyncpg's server-side
#: cursor raises them from a fetch, where SQLAlchemy's adapter does not wrap them.
_DRIVERS = frozenset({"asyncpg", "aiosqlite", "sqlite3", "asyncmy", "pymysql", "duckdb"})


def translated_error(exc: Exception) -> BaseException:
    """``exc`` as an asyncdb error, or ``exc`` itself when it is no database error: a
    SQLAlchemy, socket or timeout error, or a driver's own exception (wrapped first as
    SQLAlchemy wraps one raised by an execute)."""
    if isinstance(exc, TRANSLATED):
        return translate(exc)
    if type(exc).__module__.partition(".")[0] in _DRIVERS:
        return translate(sa_exc.DBAPIError.instance(None, None, exc, Exception))
    return exc


def translated(
    method: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``method`` (a coroutine method) raising asyncdb errors, chained with ``from`` (a
    try/except rather than :func:`translate_errors`: one frame less per query)."""

    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except Exception as exc:
            raise_translated(exc)

    wrapper.__asyncdb_translated__ = True  # type: ignore[attr-defined]
    return wrapper


def raise_translated(exc: Exception) -> NoReturn:
    """Raise :func:`translated_error` of ``exc`` from it (``exc`` itself, when it is no
    database error); called in an ``except`` clause."""
    mapped = translated_error(exc)
    if mapped is exc:
        raise exc
    raise mapped from exc


def exception_summary(exc: BaseException) -> str:
    """A one-line, secret-free description of ``exc`` for reports and logs."""
    mapped = translate(exc)
    if isinstance(mapped, AsyncDBError):
        return f"{type(mapped).__name__}: {mapped}"
    return type(exc).__name__
