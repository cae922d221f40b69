"""MariaDB/MySQL and DuckDB driver errors, classified by the one classifier in _errors.

The driver classes are the real ones (asyncmy's and DuckDB's), wrapped the way SQLAlchemy
wraps them; the servers' own messages, values included, are the input.
"""

from __future__ import annotations

import traceback

import asyncmy.errors
import duckdb
import pytest
from sqlalchemy import exc as sa_exc

from asyncdb import (
    ConflictError,
    ConnectionLostError,
    DatabaseUnavailableError,
    DataError,
    QueryError,
    RetryableError,
    ValidationError,
)
from asyncdb._translate import translate

SECRET = "ada@example.com"


def wrapped(driver: BaseException, kind: type[sa_exc.DBAPIError]) -> sa_exc.DBAPIError:
    return kind("INSERT INTO t VALUES (%s)", {"email": SECRET}, driver)


def assert_hidden(error: BaseException) -> None:
    text = "".join(traceback.format_exception(error))
    assert SECRET not in text


@pytest.mark.parametrize(
    ("errno", "message", "expected", "sqlstate"),
    [
        (1062, f"Duplicate entry '{SECRET}' for key 'uq_t_account_email'", ConflictError, "23505"),
        (
            1452,
            "Cannot add or update a child row: a foreign key constraint fails (`db`.`t`, "
            "CONSTRAINT `fk_t_order_account_id_t_account` FOREIGN KEY ...)",
            ConflictError,
            "23503",
        ),
        (1048, "Column 'name' cannot be null", ValidationError, "23502"),
        (1364, "Field 'name' doesn't have a default value", ValidationError, "23502"),
        (
            1213,
            "Deadlock found when trying to get lock; try restarting transaction",
            RetryableError,
            "40P01",
        ),
        (1205, "Lock wait timeout exceeded; try restarting transaction", RetryableError, "40001"),
        (2013, "Lost connection to server during query", ConnectionLostError, "08006"),
        (2006, "MySQL server has gone away", ConnectionLostError, "08006"),
        (1406, "Data too long for column 'email' at row 1", DataError, "22001"),
        (
            1969,
            "Query execution was interrupted (max_statement_time exceeded)",
            QueryError,
            "57014",
        ),
    ],
)
def test_mysql_errors_by_number(
    errno: int, message: str, expected: type[BaseException], sqlstate: str
) -> None:
    kind = sa_exc.IntegrityError if str(sqlstate).startswith("23") else sa_exc.OperationalError
    error = wrapped(asyncmy.errors.IntegrityError(errno, message), kind)
    mapped = translate(error)
    assert type(mapped) is expected
    assert getattr(mapped, "sqlstate", None) == sqlstate
    mapped.__cause__ = error
    assert_hidden(mapped)


def test_mysql_duplicate_names_the_key_and_scrubs_the_value_from_the_chain() -> None:
    driver = asyncmy.errors.IntegrityError(
        1062, f"Duplicate entry '{SECRET}' for key 't_account.uq_t_account_email'"
    )
    error = wrapped(driver, sa_exc.IntegrityError)
    mapped = translate(error)
    assert isinstance(mapped, ConflictError)
    assert mapped.constraint == "uq_t_account_email"
    assert SECRET not in str(driver) and SECRET not in str(error)


def test_mysql_cannot_connect_is_unavailable_not_lost() -> None:
    error = wrapped(asyncmy.errors.OperationalError(2003, "Can't connect"), sa_exc.OperationalError)
    mapped = translate(error)
    assert type(mapped) is DatabaseUnavailableError


@pytest.mark.parametrize(
    ("driver", "expected", "sqlstate"),
    [
        (
            duckdb.ConstraintException(
                f'Constraint Error: Duplicate key "email: {SECRET}" violates unique constraint.'
            ),
            ConflictError,
            "23505",
        ),
        (
            duckdb.ConstraintException(
                "Constraint Error: PRIMARY KEY or UNIQUE constraint violation: "
                f'duplicate key "{SECRET}"'
            ),
            ConflictError,
            "23505",
        ),
        (
            duckdb.ConstraintException("Constraint Error: NOT NULL constraint failed: t_item.name"),
            ValidationError,
            "23502",
        ),
        (
            duckdb.TransactionException("TransactionContext Error: Conflict on update!"),
            RetryableError,
            "40001",
        ),
        (
            duckdb.ConversionException(
                f"Conversion Error: Could not convert string '{SECRET}' to INT32"
            ),
            DataError,
            "22P02",
        ),
    ],
)
def test_duckdb_errors_by_class(
    driver: BaseException, expected: type[BaseException], sqlstate: str
) -> None:
    kind = sa_exc.IntegrityError if sqlstate.startswith("23") else sa_exc.OperationalError
    error = wrapped(driver, kind)
    mapped = translate(error)
    assert type(mapped) is expected
    assert getattr(mapped, "sqlstate", None) == sqlstate
    mapped.__cause__ = error
    assert_hidden(mapped)


def test_duckdb_duplicate_reads_the_columns_of_the_key() -> None:
    driver = duckdb.ConstraintException(
        'Constraint Error: Duplicate key "namespace: n, code: c" violates unique constraint.'
    )
    mapped = translate(wrapped(driver, sa_exc.IntegrityError))
    assert isinstance(mapped, ConflictError)
    assert mapped.columns == ("namespace", "code")
