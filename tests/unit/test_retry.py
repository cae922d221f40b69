"""Retry classification and backoff (no database)."""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import exc as sa_exc

from asyncdb import (
    ConflictError,
    DatabaseUnavailableError,
    PoolTimeoutError,
    QueryError,
    RetryableError,
    ValidationError,
)
from asyncdb._retry import (
    backoff_delay,
    is_auth_failure,
    is_connect_retryable,
    is_transaction_retryable,
)
from asyncdb._translate import translate


class FakeDriverError(Exception):
    """Stands in for an asyncpg error: carries a SQLSTATE."""

    def __init__(self, sqlstate: str | None = None) -> None:
        super().__init__("driver error")
        self.sqlstate = sqlstate


def dbapi_error(
    sqlstate: str | None = None,
    *,
    invalidated: bool = False,
    cls: type[sa_exc.DBAPIError] = sa_exc.DBAPIError,
) -> sa_exc.DBAPIError:
    return cls("SELECT 1", {}, FakeDriverError(sqlstate), connection_invalidated=invalidated)


@pytest.mark.parametrize("sqlstate", ["40001", "40P01"])
def test_serialization_failures_and_deadlocks_are_retried(sqlstate: str) -> None:
    raw = dbapi_error(sqlstate)  # asyncpg's arrive as a plain DBAPIError
    assert is_transaction_retryable(raw)
    translated = translate(raw)
    assert isinstance(translated, RetryableError)
    assert translated.sqlstate == sqlstate
    assert is_transaction_retryable(translated)
    assert is_transaction_retryable(RetryableError("x", sqlstate=sqlstate))


def test_dropped_connections_are_retried() -> None:
    dropped = dbapi_error(invalidated=True)
    assert is_transaction_retryable(dropped)
    wrapped = DatabaseUnavailableError("lost")
    wrapped.__cause__ = dropped  # as `raise ... from exc` in translate_errors leaves it
    assert is_transaction_retryable(wrapped)
    assert is_transaction_retryable(sa_exc.DisconnectionError("gone"))
    assert is_transaction_retryable(ConnectionResetError())

    class ConnectionDoesNotExistError(Exception):
        pass

    assert is_transaction_retryable(ConnectionDoesNotExistError())


@pytest.mark.parametrize(
    "error",
    [
        dbapi_error("23505", cls=sa_exc.IntegrityError),
        ConflictError("dup", sqlstate="23505"),
        ValidationError("bad"),
        QueryError("syntax", sqlstate="42601"),
        dbapi_error("42P01"),
        PoolTimeoutError("pool"),  # waiting longer for a busy pool only adds load
        DatabaseUnavailableError("no cause"),
        ValueError("x"),
    ],
)
def test_other_errors_are_not_retried(error: BaseException) -> None:
    assert not is_transaction_retryable(error)


def test_chains_with_cycles_terminate() -> None:
    first = ValueError("a")
    second = ValueError("b")
    first.__cause__ = second
    second.__cause__ = first
    assert not is_transaction_retryable(first)
    assert not is_connect_retryable(first)


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (socket.gaierror(-2, "Name or service not known"), True),
        (dbapi_error("57P03"), True),  # the server is starting up
        (dbapi_error("53300"), True),  # too many connections
        (dbapi_error("08006"), True),
        (dbapi_error("28P01"), False),  # bad password
        (dbapi_error("3D000"), False),  # no such database
        (ValueError("x"), False),
    ],
)
def test_connect_retry_classification(error: BaseException, retry: bool) -> None:
    assert is_connect_retryable(error) is retry


def test_auth_failures() -> None:
    assert is_auth_failure(dbapi_error("28P01"))
    assert is_auth_failure(dbapi_error("28000"))
    assert is_auth_failure(dbapi_error("3D000"))
    assert not is_auth_failure(dbapi_error("40001"))
    assert not is_auth_failure(ConnectionRefusedError())


@pytest.mark.parametrize("attempt", range(8))
def test_backoff_is_jittered_between_half_and_full_ceiling(attempt: int) -> None:
    base, cap = 0.05, 2.0
    ceiling = min(cap, base * 2**attempt)
    delays = [backoff_delay(attempt, base, cap=cap) for _ in range(200)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1  # jittered: concurrent retries spread out


def test_backoff_is_capped_and_zero_base_means_no_wait() -> None:
    assert all(backoff_delay(50, 1.0, cap=3.0) <= 3.0 for _ in range(100))
    assert backoff_delay(5, 0.0) == 0.0


def test_too_many_connections_is_translated_as_unavailable() -> None:
    assert isinstance(translate(dbapi_error("53300")), DatabaseUnavailableError)
