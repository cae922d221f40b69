"""What a MariaDB/MySQL or DuckDB driver error means, and how to strip row values from it.

The lowest layer: it imports no driver. MySQL errors are read by their error number
(``args[0]`` of an asyncmy error), DuckDB errors by the names of their exception classes,
so neither driver has to be installed for asyncdb to import. :mod:`asyncdb._errors` turns
a :class:`Failure` into the asyncdb error.

Both drivers put row values into their messages (MySQL 1062: ``Duplicate entry
'ada@example.com' for key 'uq_users_email'``; DuckDB: ``Duplicate key "email:
ada@example.com" violates unique constraint``). :func:`scrub_backend_values` rewrites
those messages in place, in the driver error and in the SQLAlchemy error wrapping it, so
no traceback or log line carries the value.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["Failure", "classify_backend_error", "scrub_backend_values"]

#: MySQL/MariaDB error numbers asyncdb tells apart.
MYSQL_DUPLICATE = 1062
MYSQL_DEADLOCK = 1213
MYSQL_LOCK_WAIT_TIMEOUT = 1205
MYSQL_FK_CHILD = 1452
MYSQL_FK_PARENT = 1451
MYSQL_NOT_NULL = (1048, 1364)
MYSQL_CHECK = 4025  # MariaDB; MySQL uses 3819
MYSQL_CHECK_MYSQL = 3819
MYSQL_QUERY_INTERRUPTED = (1969, 3024)  # max_statement_time, max_execution_time
MYSQL_READ_ONLY = 1792
MYSQL_DATA = (1264, 1265, 1292, 1366, 1406)  # out of range, truncated, bad value, too long
MYSQL_CONNECTION_LOST = (2002, 2003, 2006, 2013, 2055, 1927, 4031)
MYSQL_TOO_MANY_CONNECTIONS = 1040


@dataclasses.dataclass(frozen=True)
class Failure:
    """A backend error's meaning: ``kind`` is one of ``unique``, ``foreign_key``,
    ``not_null``, ``check``, ``retryable``, ``timeout``, ``read_only``, ``data``,
    ``unavailable``, ``too_many_connections``, ``unsupported``."""

    kind: str
    backend: str
    code: str | None = None
    constraint: str | None = None
    detail: str | None = None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: set[int] = set()
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return out


def _mysql_errno(exc: BaseException) -> int | None:
    module = type(exc).__module__
    if not (module.startswith(("asyncmy", "pymysql", "MySQLdb", "aiomysql"))):
        return None
    args = exc.args
    return args[0] if args and isinstance(args[0], int) else None


def _duckdb_names(exc: BaseException) -> set[str]:
    if not type(exc).__module__.startswith(("duckdb", "_duckdb", "asyncdb._dialect_duckdb")):
        return set()
    return {cls.__name__ for cls in type(exc).__mro__}


_MYSQL_KEY = re.compile(r"for key '(?:[^']*\.)?([^']*)'")
_MYSQL_FK = re.compile(r"CONSTRAINT `([^`]*)`")
_MYSQL_CHECK_NAME = re.compile(r"CONSTRAINT `([^`]*)`|constraint '([^']*)'")


def _mysql_failure(errno: int, message: str) -> Failure | None:
    code = str(errno)
    if errno == MYSQL_DUPLICATE:
        match = _MYSQL_KEY.search(message)
        return Failure("unique", "mysql", code, match.group(1) if match else None)
    if errno in (MYSQL_FK_CHILD, MYSQL_FK_PARENT):
        match = _MYSQL_FK.search(message)
        return Failure("foreign_key", "mysql", code, match.group(1) if match else None)
    if errno in MYSQL_NOT_NULL:
        return Failure("not_null", "mysql", code)
    if errno in (MYSQL_CHECK, MYSQL_CHECK_MYSQL):
        match = _MYSQL_CHECK_NAME.search(message)
        name = (match.group(1) or match.group(2)) if match else None
        return Failure("check", "mysql", code, name)
    if errno == MYSQL_DEADLOCK:
        return Failure("retryable", "mysql", code, detail="deadlock")
    if errno == MYSQL_LOCK_WAIT_TIMEOUT:
        return Failure("retryable", "mysql", code, detail="lock wait timeout")
    if errno in MYSQL_QUERY_INTERRUPTED:
        return Failure("timeout", "mysql", code)
    if errno == MYSQL_READ_ONLY:
        return Failure("read_only", "mysql", code)
    if errno in MYSQL_DATA:
        return Failure("data", "mysql", code)
    if errno in MYSQL_CONNECTION_LOST:
        return Failure("unavailable", "mysql", code)
    if errno == MYSQL_TOO_MANY_CONNECTIONS:
        return Failure("too_many_connections", "mysql", code)
    return None


def _duckdb_failure(names: set[str], message: str) -> Failure | None:
    if "SavepointUnsupported" in names:
        return Failure("unsupported", "duckdb", detail="savepoint")
    if "ConstraintException" in names:
        lowered = message.lower()
        if "foreign key" in lowered:
            return Failure("foreign_key", "duckdb")
        if "not null" in lowered:
            return Failure("not_null", "duckdb")
        if "check constraint" in lowered:
            return Failure("check", "duckdb")
        return Failure("unique", "duckdb")
    if "TransactionException" in names and "conflict" in message.lower():
        return Failure("retryable", "duckdb", detail="write-write conflict")
    if "ConversionException" in names or "OutOfRangeException" in names:
        return Failure("data", "duckdb")
    if "ConnectionException" in names:
        return Failure("unavailable", "duckdb")
    if "InterruptException" in names:
        return Failure("timeout", "duckdb")
    return None


def classify_backend_error(exc: BaseException) -> Failure | None:
    """The meaning of a MariaDB/MySQL or DuckDB error anywhere in ``exc``'s chain."""
    for current in _chain(exc):
        errno = _mysql_errno(current)
        if errno is not None:
            return _mysql_failure(errno, _text(current))
        names = _duckdb_names(current)
        if names:
            return _duckdb_failure(names, _text(current))
    return None


def _text(exc: BaseException) -> str:
    return " ".join(str(arg) for arg in exc.args)


#: (pattern, replacement) pairs that cut row values out of driver messages.
_VALUE_PATTERNS = (
    (re.compile(r"Duplicate entry '.*' for key", re.S), "Duplicate entry for key"),
    (re.compile(r"(Incorrect \w+ value): '.*?' for column", re.S), r"\1 for column"),
    (re.compile(r"(Truncated incorrect \w+ value): '.*'", re.S), r"\1"),
    (re.compile(r'Duplicate key ".*" violates', re.S), "Duplicate key violates"),
    (
        re.compile(r'because key ".*" (does not exist|is still referenced)', re.S),
        r"because a key \1",
    ),
    (re.compile(r"Could not convert string '.*?' to", re.S), "Could not convert a string to"),
    (re.compile(r"(Conversion Error:[^\n]*?)(?:'[^\n]*')", re.S), r"\1<value>"),
    (re.compile(r"Failing row contains \(.*\)", re.S), "Failing row contains (...)"),
)


def _scrub_text(text: str) -> str:
    for pattern, replacement in _VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub_backend_values(exc: BaseException) -> None:
    """Rewrite value-bearing messages in ``exc``'s chain (SQLAlchemy and driver errors)."""
    for current in _chain(exc):
        args = current.args
        if not args or not any(isinstance(arg, str) for arg in args):
            continue
        scrubbed = tuple(_scrub_text(arg) if isinstance(arg, str) else arg for arg in args)
        if scrubbed != args:
            current.args = scrubbed
