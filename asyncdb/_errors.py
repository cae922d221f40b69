"""Exceptions raised by asyncdb (:mod:`._translate` maps driver errors onto them).

The tree::

    AsyncDBError
    ├── ConfigurationError        bad settings, URL or option; raised before any I/O
    ├── DatabaseUnavailableError  cannot reach the server (refused, DNS, timed out)
    │   ├── ConnectionLostError   the connection broke (reset, closed, server shut down)
    │   ├── PoolTimeoutError      every pooled connection stayed busy for pool_timeout
    │   └── CommitOutcomeUnknownError  the connection died after COMMIT was sent
    ├── NotFoundError             no row with that primary key
    ├── ValidationError           caller input rejected before SQL, or a NOT NULL/CHECK failure
    │   └── DataError             the database rejected a value (too long, out of range, bad text)
    ├── ConflictError             unique or foreign-key violation
    ├── TransactionError          misuse of a unit of work, or a failed transaction
    │   └── RetryableError        serialization failure or deadlock; run_tx retries these
    ├── QueryError                the database rejected a statement (syntax, missing table)
    │   └── UnsupportedFeatureError  the backend lacks the feature (DuckDB: SAVEPOINT)
    ├── MigrationError            an Alembic revision failed
    └── StateError                the manager was used before connect() or after dispose()

Classification is the one module beside it, :mod:`._translate`: ``translate`` maps any
exception to the most specific class above, ``exception_chain`` is the one walk down an
exception's causes, and the retry decisions are ``isinstance`` checks on what
``classify`` returns.

Every message is a sentence that says what to do next. None carries a password or a
bound parameter value: engines are built with ``hide_parameters=True`` and messages are
written here from the error's class and constraint name, not from the driver's text.
"""

from __future__ import annotations

__all__ = [
    "AsyncDBError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConflictError",
    "ConnectionLostError",
    "DataError",
    "DatabaseUnavailableError",
    "MigrationError",
    "NotFoundError",
    "PoolTimeoutError",
    "QueryError",
    "RetryableError",
    "StateError",
    "TransactionError",
    "UnsupportedFeatureError",
    "ValidationError",
]


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


class ConnectionLostError(DatabaseUnavailableError):
    """An open connection broke mid-operation (reset, closed, server shut down).

    ``run_tx`` runs the whole transaction again; a standalone read is repeated once.
    """


class PoolTimeoutError(DatabaseUnavailableError):
    """No pooled connection became free within ``pool_timeout`` seconds."""


class CommitOutcomeUnknownError(DatabaseUnavailableError):
    """The connection was lost after COMMIT was sent: the transaction may have committed.

    Never retried automatically (``run_tx`` raises it at once): running the work again
    could apply it twice. Check the data, or make the work idempotent, before retrying.
    """


def commit_outcome_unknown(exc: DatabaseUnavailableError) -> CommitOutcomeUnknownError:
    """The error for a connection lost while COMMIT was in flight; raise it ``from exc``."""
    msg = (
        "The connection to the database was lost while committing: the transaction may "
        "or may not have committed, so it was not retried. Check whether the change is "
        "there before doing it again, or make the work idempotent."
    )
    return CommitOutcomeUnknownError(msg, sqlstate=exc.sqlstate)


class NotFoundError(AsyncDBError):
    """No row exists for the requested primary key."""


class ValidationError(AsyncDBError):
    """Input was rejected: unknown column or operator, bad page, bad cursor, bad value."""


class DataError(ValidationError):
    """The database rejected a value as data: too long for its column, out of range,
    not valid for the column's type. A client error, like any :class:`ValidationError`;
    ``column`` names the column when the driver says which."""

    def __init__(
        self, message: str, *, sqlstate: str | None = None, column: str | None = None
    ) -> None:
        super().__init__(message, sqlstate=sqlstate)
        self.column = column


class ConflictError(AsyncDBError):
    """A unique or foreign-key constraint rejected the change. Nothing was written."""

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        constraint: str | None = None,
        columns: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, sqlstate=sqlstate)
        self.constraint = constraint
        #: The violated columns, bare names in the same form on every backend (may be empty).
        self.columns = columns


class TransactionError(AsyncDBError):
    """A unit of work was misused, or its transaction failed."""


class RetryableError(TransactionError):
    """A serialization failure or deadlock: run the whole transaction again."""


class QueryError(AsyncDBError):
    """The database rejected a statement (syntax error, missing table or column)."""


class UnsupportedFeatureError(QueryError):
    """The backend lacks a feature; the message names both (see docs/backends.md).

    ``feature`` and ``backend`` carry them, as the capability table names them.
    """

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


class StateError(AsyncDBError):
    """The manager was used before ``connect()`` or after ``dispose()``."""
