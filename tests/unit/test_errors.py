"""The translation table from driver/SQLAlchemy errors to asyncdb errors."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import exc as sa_exc

from asyncdb import (
    AsyncDBError,
    ConflictError,
    ConnectionLostError,
    DatabaseUnavailableError,
    PoolTimeoutError,
    QueryError,
    RetryableError,
    TransactionError,
    ValidationError,
)
from asyncdb._translate import scrub_values, sqlstate_of, translate, translate_errors


class DriverError(Exception):
    """Stands in for an asyncpg error: a sqlstate and a DETAIL rendered into str()."""

    def __init__(self, message: str, sqlstate: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.detail = detail
        self.constraint_name = "uq_users_email"
        self.table_name = "users"

    def __str__(self) -> str:
        text = str(self.args[0])
        return f"{text}\nDETAIL:  {self.detail}" if self.detail else text


def wrapped(
    cls: type[sa_exc.DBAPIError], state: str, detail: str | None = None
) -> sa_exc.DBAPIError:
    driver = DriverError("boom", state, detail)
    adapted = Exception("adapted")
    adapted.__cause__ = driver
    return cls("INSERT ...", {"email": "ada@example.com"}, adapted, hide_parameters=True)


@pytest.mark.parametrize(
    ("state", "cls", "expected"),
    [
        ("23505", sa_exc.IntegrityError, ConflictError),
        ("23503", sa_exc.IntegrityError, ConflictError),
        ("23502", sa_exc.IntegrityError, ValidationError),
        ("23514", sa_exc.IntegrityError, ValidationError),
        ("40001", sa_exc.DBAPIError, RetryableError),
        ("40P01", sa_exc.DBAPIError, RetryableError),
        ("57014", sa_exc.OperationalError, QueryError),
        ("25006", sa_exc.InternalError, TransactionError),
        ("08006", sa_exc.OperationalError, ConnectionLostError),
        ("42P01", sa_exc.ProgrammingError, QueryError),
    ],
)
def test_translation_by_sqlstate(
    state: str, cls: type[sa_exc.DBAPIError], expected: type[AsyncDBError]
) -> None:
    err = wrapped(cls, state)
    mapped = translate(err)
    assert type(mapped) is expected
    assert isinstance(mapped, AsyncDBError)
    assert mapped.sqlstate == state
    assert "ada@example.com" not in str(mapped)
    assert str(mapped).endswith(".")


def test_sqlite_constraint_messages() -> None:
    orig = Exception("UNIQUE constraint failed: users.email")
    err = sa_exc.IntegrityError("INSERT", {}, orig, hide_parameters=True)
    mapped = translate(err)
    assert isinstance(mapped, ConflictError)
    assert "users.email" in str(mapped)
    fk = sa_exc.IntegrityError("INSERT", {}, Exception("FOREIGN KEY constraint failed"))
    assert isinstance(translate(fk), ConflictError)
    nn = sa_exc.IntegrityError("INSERT", {}, Exception("NOT NULL constraint failed: t.name"))
    assert isinstance(translate(nn), ValidationError)


def test_pool_timeout_and_plain_errors() -> None:
    assert isinstance(translate(sa_exc.TimeoutError("QueuePool limit")), PoolTimeoutError)
    assert isinstance(translate(ConnectionRefusedError(111, "refused")), DatabaseUnavailableError)
    plain = ValueError("not a database error")
    assert translate(plain) is plain


def test_translate_errors_chains_the_original() -> None:
    err = wrapped(sa_exc.IntegrityError, "23505")
    with pytest.raises(ConflictError) as info, translate_errors():
        raise err
    assert info.value.__cause__ is err
    assert info.value.constraint == "uq_users_email"  # type: ignore[attr-defined]


def test_values_are_scrubbed_from_driver_details() -> None:
    err = wrapped(sa_exc.IntegrityError, "23505", "Key (email)=(ada@example.com) already exists.")
    scrub_values(err)
    driver = err.orig.__cause__  # type: ignore[union-attr]
    assert "ada@example.com" not in str(driver)
    other = wrapped(sa_exc.OperationalError, "XX000", "some harmless detail")
    scrub_values(other)
    assert "harmless" in str(other.orig.__cause__)  # type: ignore[union-attr]


def test_sqlstate_of_walks_the_chain() -> None:
    assert sqlstate_of(wrapped(sa_exc.DBAPIError, "40001")) == "40001"
    assert sqlstate_of(ValueError()) is None


def test_the_docstring_tree_names_every_exported_error() -> None:
    import asyncdb
    import asyncdb._errors

    tree = asyncdb._errors.__doc__ or ""
    for name in asyncdb.__all__:
        obj = getattr(asyncdb, name)
        if isinstance(obj, type) and issubclass(obj, asyncdb.AsyncDBError):
            assert re.search(rf"^[\s│├└─]*{name}\b", tree, re.M), f"{name} not in the tree"


def test_a_broken_connection_and_a_pool_timeout_are_distinct_classes() -> None:
    from asyncdb import ConnectionLostError, DatabaseUnavailableError, PoolTimeoutError

    dropped = sa_exc.DBAPIError("SELECT 1", {}, Exception("x"), connection_invalidated=True)
    lost = translate(dropped)
    assert type(lost) is ConnectionLostError
    assert isinstance(lost, DatabaseUnavailableError)
    pool = translate(sa_exc.TimeoutError("QueuePool limit"))
    assert type(pool) is PoolTimeoutError
    assert not isinstance(pool, ConnectionLostError)
    # Could not be opened (timed out, DNS): unavailable, but not "lost".
    assert type(translate(TimeoutError())) is DatabaseUnavailableError


def test_classify_looks_through_a_hand_built_error_to_its_cause() -> None:
    from asyncdb import ConnectionLostError, DatabaseUnavailableError
    from asyncdb._translate import classify

    wrapped = DatabaseUnavailableError("lost")
    wrapped.__cause__ = ConnectionResetError()
    assert classify(wrapped) is ConnectionLostError
    assert classify(DatabaseUnavailableError("no cause")) is DatabaseUnavailableError
    assert classify(ValueError("x")) is ValueError


def test_bad_credentials_are_a_configuration_error() -> None:
    from asyncdb import ConfigurationError

    class Driver(Exception):
        sqlstate = "28P01"

    err = sa_exc.OperationalError("connect", {}, Driver("password authentication failed"))
    mapped = translate(err)
    assert type(mapped) is ConfigurationError
    assert "password authentication failed" not in str(mapped)


def test_the_chain_walker_follows_orig_and_cause_and_stops_on_cycles() -> None:
    from asyncdb._translate import exception_chain

    driver = ValueError("driver")
    top = sa_exc.DBAPIError("SELECT 1", {}, driver)
    assert list(exception_chain(top)) == [top, driver]
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert list(exception_chain(a)) == [a, b]
