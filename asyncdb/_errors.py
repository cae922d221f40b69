"""Exceptions raised by asyncdb, and the one place that translates driver errors.

The tree::

    AsyncDBError
    ├── ConfigurationError        bad settings, URL or option; raised before any I/O
    ├── DatabaseUnavailableError  cannot reach the server (refused, reset, DNS, timed out)
    │   └── PoolTimeoutError      every pooled connection stayed busy for pool_timeout
    ├── NotFoundError             no row with that primary key
    ├── ValidationError           caller input rejected before SQL, or a NOT NULL/CHECK failure
    ├── ConflictError             unique or foreign-key violation
    ├── TransactionError          misuse of a unit of work, or a failed transaction
    │   └── RetryableError        serialization failure or deadlock; run_tx retries these
    ├── QueryError                the database rejected a statement (syntax, missing table)
    │   └── UnsupportedFeatureError  the backend lacks the feature (DuckDB: SAVEPOINT)
    └── MigrationError            an Alembic revision failed

Every message is a sentence that says what to do next. None carries a password or a
bound parameter value: engines are built with ``hide_parameters=True`` and messages are
written here from the error's class and constraint name, not from the driver's text.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

from ._backend_errors import Failure, classify_backend_error, scrub_backend_values

__all__ = [
    "AsyncDBError",
    "ConfigurationError",
    "ConflictError",
    "DatabaseUnavailableError",
    "MigrationError",
    "NotFoundError",
    "PoolTimeoutError",
    "QueryError",
    "RetryableError",
    "TransactionError",
    "UnsupportedFeatureError",
    "ValidationError",
    "sqlstate_of",
    "translate_errors",
]

RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


class AsyncDBError(Exception):
    """Root of every error asyncdb raises.

    ``sqlstate`` holds the SQLSTATE code when the error came from the database.
    """

    def __init__(self, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class ConfigurationError(AsyncDBError):
    """A setting, URL or option is invalid. Raised before any connection is attempted."""


class DatabaseUnavailableError(AsyncDBError):
    """The database server cannot be reached, or the connection to it was lost."""


class PoolTimeoutError(DatabaseUnavailableError):
    """No pooled connection became free within ``pool_timeout`` seconds."""


class NotFoundError(AsyncDBError):
    """No row exists for the requested primary key."""


class ValidationError(AsyncDBError):
    """Input was rejected: unknown column or operator, bad page, bad cursor, bad value."""


class ConflictError(AsyncDBError):
    """A unique or foreign-key constraint rejected the change. Nothing was written."""

    def __init__(
        self, message: str, *, sqlstate: str | None = None, constraint: str | None = None
    ) -> None:
        super().__init__(message, sqlstate=sqlstate)
        self.constraint = constraint


class TransactionError(AsyncDBError):
    """A unit of work was misused, or its transaction failed."""


class RetryableError(TransactionError):
    """A serialization failure or deadlock: run the whole transaction again."""


class QueryError(AsyncDBError):
    """The database rejected a statement (syntax error, missing table or column)."""


class UnsupportedFeatureError(QueryError):
    """The backend does not support a feature; the message names both (see docs/backends.md)."""

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        feature: str | None = None,
        backend: str | None = None,
    ) -> None:
        super().__init__(message, sqlstate=sqlstate)
        self.feature = feature
        self.backend = backend


class MigrationError(AsyncDBError):
    """An Alembic revision failed; the message names it and what to run next."""


_SQLITE_CONSTRAINT = re.compile(
    r"(UNIQUE|FOREIGN KEY|NOT NULL|CHECK) constraint failed(?::\s*(.+))?"
)


def sqlstate_of(exc: BaseException) -> str | None:
    """Return the SQLSTATE carried by ``exc`` or anything it wraps, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for attr in ("sqlstate", "pgcode"):
            code = getattr(current, attr, None)
            if isinstance(code, str) and len(code) == 5:
                return code
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return None


def _driver_error(exc: BaseException) -> BaseException | None:
    """The innermost driver exception (asyncpg's, sqlite3's) under a SQLAlchemy error."""
    orig = getattr(exc, "orig", None)
    if not isinstance(orig, BaseException):
        return None
    return orig.__cause__ if orig.__cause__ is not None else orig


def _attr(exc: BaseException | None, name: str) -> str | None:
    value = getattr(exc, name, None)
    return value if isinstance(value, str) else None


def _integrity_error(exc: sa_exc.IntegrityError) -> AsyncDBError:
    driver = _driver_error(exc)
    state = sqlstate_of(exc)
    constraint = _attr(driver, "constraint_name")
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
        return ConflictError(msg, sqlstate=state or "23505", constraint=target or None)
    if kind == "FOREIGN KEY":
        msg = (
            f"A foreign-key constraint rejected the change{where}{name}. "
            "Create the referenced row first, or remove the rows that still refer to it."
        )
        return ConflictError(msg, sqlstate=state or "23503", constraint=target or None)
    if kind == "NOT NULL":
        msg = f"A required column was left empty{where}{name}. Give it a value."
        return ValidationError(msg, sqlstate=state or "23502")
    if kind == "CHECK":
        msg = f"A CHECK constraint rejected the value{where}{name}. Change the value to satisfy it."
        return ValidationError(msg, sqlstate=state or "23514")
    msg = f"The database rejected the change with an integrity error{where}{name}. Check the data."
    return ConflictError(msg, sqlstate=state, constraint=target or None)


def _is_connection_level(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    state = sqlstate_of(exc)
    if state is not None and (state.startswith("08") or state in {"57P01", "57P02", "57P03"}):
        return True
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (OSError, TimeoutError)):
            return True
        name = type(current).__name__
        if name in {"ConnectionDoesNotExistError", "CannotConnectNowError", "InterfaceError"} and (
            "closed" in str(current).lower() or name != "InterfaceError"
        ):
            return True
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


_VALUE_BEARING_DETAIL = re.compile(r"Key \(|Failing row contains|\)=\(")


def scrub_values(exc: BaseException) -> None:
    """Remove row values from driver exceptions in ``exc``'s chain, in place.

    asyncpg renders the server's DETAIL (``Key (email)=(ada@example.com) already
    exists``) into ``str(exc)``, so any traceback or log of the chained error would
    carry the value. The constraint name and SQLSTATE stay.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        detail = getattr(current, "detail", None)
        if isinstance(detail, str) and _VALUE_BEARING_DETAIL.search(detail):
            with contextlib.suppress(AttributeError):  # a read-only attribute
                current.detail = None  # type: ignore[attr-defined]
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def translate(exc: BaseException) -> BaseException:
    """Map a SQLAlchemy or driver exception to the most specific asyncdb error.

    Anything that is not a database error (including asyncdb's own) is returned as is.
    """
    if isinstance(exc, AsyncDBError):
        return exc
    scrub_values(exc)
    # MariaDB/MySQL (error numbers) and DuckDB (exception classes): _backend_errors.py.
    scrub_backend_values(exc)
    failure = classify_backend_error(exc)
    if failure is not None:
        mapped = _backend_error(failure)
        if mapped is not None:
            return mapped
    if isinstance(exc, sa_exc.TimeoutError):
        msg = (
            "No pooled connection became free within pool_timeout. Raise pool_size or "
            "max_overflow, shorten transactions, or look for connections held too long."
        )
        return PoolTimeoutError(msg)
    if isinstance(exc, sa_exc.IntegrityError):
        return _integrity_error(exc)
    state = sqlstate_of(exc)
    if state in RETRYABLE_SQLSTATES:
        what = "deadlock" if state == "40P01" else "serialization failure"
        msg = (
            f"The transaction was aborted by a {what}. Run the whole transaction again; "
            "asyncdb.run_tx does this for you."
        )
        return RetryableError(msg, sqlstate=state)
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
    if isinstance(exc, (sa_exc.DBAPIError, OSError, TimeoutError)) and _is_connection_level(exc):
        msg = (
            "The connection to the database was lost or could not be opened. Check that the "
            "server is running and reachable; the operation was not completed."
        )
        return DatabaseUnavailableError(msg, sqlstate=state)
    if isinstance(exc, sa_exc.DBAPIError):
        driver = _driver_error(exc)
        kind = type(driver).__name__ if driver is not None else type(exc).__name__
        msg = f"The database rejected the statement ({kind}). Check the SQL and the schema."
        return QueryError(msg, sqlstate=state)
    return exc


_BACKEND_NAMES = {"mysql": "MariaDB/MySQL", "duckdb": "DuckDB"}


def _backend_error(failure: Failure) -> AsyncDBError | None:
    """The asyncdb error for a classified MariaDB/MySQL or DuckDB failure."""
    name = f" ({failure.constraint})" if failure.constraint else ""
    backend = _BACKEND_NAMES.get(failure.backend, failure.backend)
    kind = failure.kind
    if kind == "unique":
        msg = (
            f"A row with the same unique value already exists{name}. "
            "Use a different value, or update the existing row (upsert) instead."
        )
        return ConflictError(msg, sqlstate="23505", constraint=failure.constraint)
    if kind == "foreign_key":
        msg = (
            f"A foreign-key constraint rejected the change{name}. "
            "Create the referenced row first, or remove the rows that still refer to it."
        )
        return ConflictError(msg, sqlstate="23503", constraint=failure.constraint)
    if kind == "not_null":
        return ValidationError(
            "A required column was left empty. Give it a value.", sqlstate="23502"
        )
    if kind == "check":
        msg = f"A CHECK constraint rejected the value{name}. Change the value to satisfy it."
        return ValidationError(msg, sqlstate="23514")
    if kind == "retryable":
        msg = (
            f"The transaction was aborted by a {failure.detail} on {backend}. Run the whole "
            "transaction again; asyncdb.run_tx does this for you."
        )
        return RetryableError(msg, sqlstate="40001")
    if kind == "timeout":
        msg = (
            "The statement was cancelled because it ran past statement_timeout. Make the query "
            "cheaper (an index, a smaller batch) or raise statement_timeout."
        )
        return QueryError(msg, sqlstate="57014")
    if kind == "read_only":
        msg = "A write was attempted in a read-only transaction. Use a read-write session or unit."
        return TransactionError(msg, sqlstate="25006")
    if kind == "data":
        msg = (
            f"{backend} rejected a value as data (out of range, too long or not convertible). "
            "Check the value against the column's type."
        )
        return ValidationError(msg, sqlstate="22000")
    if kind == "unavailable":
        msg = (
            "The connection to the database was lost or could not be opened. Check that the "
            "server is running and reachable; the operation was not completed."
        )
        return DatabaseUnavailableError(msg, sqlstate="08006")
    if kind == "too_many_connections":
        msg = (
            "The database server refused the connection: it has too many clients. Lower "
            "pool_size/max_overflow across your processes."
        )
        return DatabaseUnavailableError(msg, sqlstate="53300")
    if kind == "unsupported":
        feature = failure.detail or "this feature"
        msg = (
            f"{backend} does not support {feature}. Restructure the work without it, or use "
            "a backend that has it (see the capability table in docs/backends.md)."
        )
        return UnsupportedFeatureError(msg, feature=feature, backend=failure.backend)
    return None


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Re-raise SQLAlchemy and driver errors as asyncdb errors, chained with ``from``."""
    try:
        yield
    except (sa_exc.SQLAlchemyError, OSError) as exc:
        mapped = translate(exc)
        if mapped is exc:
            raise
        raise mapped from exc


def exception_summary(exc: BaseException) -> str:
    """A one-line, secret-free description of ``exc`` for reports and logs."""
    mapped = translate(exc)
    if isinstance(mapped, AsyncDBError):
        return f"{type(mapped).__name__}: {mapped}"
    return type(exc).__name__
