"""What a MariaDB/MySQL or DuckDB driver error stands for, in the terms of PostgreSQL's.

:mod:`asyncdb._errors` is the one classifier; it reads SQLSTATEs. asyncpg and SQLite
errors carry theirs (or a result code); asyncmy's carry a MySQL error number
(``args[0]``) and DuckDB's only their exception class. :func:`driver_facts` turns one
such exception into the SQLSTATE it stands for, plus what the message needs (the words
for a retryable abort, the constraint the driver names), so every rule of the classifier
applies to these backends unchanged. No driver is imported: a backend's driver need not
be installed for asyncdb to import.

Both drivers quote row values in their messages (MySQL 1062: ``Duplicate entry
'ada@example.com' for key 'uq_account_email'``; DuckDB: ``Duplicate key "email:
ada@example.com" violates unique constraint``). :data:`VALUE_BEARING_TEXT` cuts them out;
the classifier applies it with its own patterns to every message in the chain.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["VALUE_BEARING_TEXT", "DriverFacts", "driver_facts"]


@dataclasses.dataclass(frozen=True)
class DriverFacts:
    """What one driver exception means.

    ``sqlstate`` is the standard (PostgreSQL) code it stands for; ``retry_reason`` is set
    for an abort that running the transaction again can cure (``"deadlock"``, ``"lock wait
    timeout"``, ``"write-write conflict"``); ``constraint`` is the key or constraint name
    the driver gave; ``unsupported`` names a feature the backend lacks.
    """

    sqlstate: str | None
    retry_reason: str | None = None
    constraint: str | None = None
    columns: tuple[str, ...] = ()
    unsupported: str | None = None


# -- MariaDB / MySQL: error numbers --------------------------------------------------

#: MySQL error number -> SQLSTATE (PostgreSQL's code where MySQL reports a generic one).
_MYSQL_STATES = {
    1062: "23505",  # ER_DUP_ENTRY
    1586: "23505",  # ER_DUP_ENTRY_WITH_KEY_NAME
    1451: "23503",  # ER_ROW_IS_REFERENCED_2
    1452: "23503",  # ER_NO_REFERENCED_ROW_2
    1048: "23502",  # ER_BAD_NULL_ERROR
    1364: "23502",  # ER_NO_DEFAULT_FOR_FIELD
    4025: "23514",  # ER_CONSTRAINT_FAILED (MariaDB)
    3819: "23514",  # ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
    1213: "40P01",  # ER_LOCK_DEADLOCK
    1205: "40001",  # ER_LOCK_WAIT_TIMEOUT: the statement's transaction is to be run again
    1969: "57014",  # ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
    3024: "57014",  # ER_QUERY_TIMEOUT (MySQL max_execution_time)
    1792: "25006",  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    1264: "22003",  # ER_WARN_DATA_OUT_OF_RANGE
    1690: "22003",  # ER_DATA_OUT_OF_RANGE
    1406: "22001",  # ER_DATA_TOO_LONG
    1265: "22001",  # WARN_DATA_TRUNCATED
    1292: "22007",  # ER_TRUNCATED_WRONG_VALUE (dates, numbers)
    1366: "22P02",  # ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
    1367: "22P02",  # ER_ILLEGAL_VALUE_FOR_TYPE
    1040: "53300",  # ER_CON_COUNT_ERROR: too many connections
    1045: "28000",  # ER_ACCESS_DENIED_ERROR
    1044: "28000",  # ER_DBACCESS_DENIED_ERROR
    1049: "3D000",  # ER_BAD_DB_ERROR
    1146: "42P01",  # ER_NO_SUCH_TABLE
    2002: "08001",  # CR_CONNECTION_ERROR (socket)
    2003: "08001",  # CR_CONN_HOST_ERROR: cannot connect
    2005: "08001",  # CR_UNKNOWN_HOST
    2006: "08006",  # CR_SERVER_GONE_ERROR
    2013: "08006",  # CR_SERVER_LOST
    2055: "08006",  # CR_SERVER_LOST_EXTENDED
    1927: "08006",  # ER_CONNECTION_KILLED (MariaDB)
    4031: "08006",  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL)
    1053: "57P01",  # ER_SERVER_SHUTDOWN
}
_MYSQL_RETRY_REASONS = {1213: "deadlock", 1205: "lock wait timeout"}
_MYSQL_MODULES = ("asyncmy", "pymysql", "MySQLdb", "aiomysql")
# MariaDB: for key 'uq_x'; MySQL 8: for key 'table.uq_x'.
_MYSQL_KEY = re.compile(r"for key '(?:[^'.]*\.)?([^']*)'")
_MYSQL_CONSTRAINT = re.compile(r"CONSTRAINT `([^`]*)`|constraint '([^']*)'")


def _mysql_facts(exc: BaseException) -> DriverFacts | None:
    if not type(exc).__module__.startswith(_MYSQL_MODULES):
        return None
    errno = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    if errno is None:
        return None
    message = " ".join(str(arg) for arg in exc.args[1:])
    constraint = None
    match = _MYSQL_KEY.search(message) if errno in (1062, 1586) else None
    if match is None:
        match = _MYSQL_CONSTRAINT.search(message)
    if match is not None:
        constraint = next(group for group in match.groups() if group is not None)
    return DriverFacts(
        _MYSQL_STATES.get(errno),
        retry_reason=_MYSQL_RETRY_REASONS.get(errno),
        constraint=constraint,
    )


# -- DuckDB: exception classes -----------------------------------------------------------

_DUCKDB_MODULES = ("duckdb", "_duckdb", "asyncdb._dialect_duckdb")
# Duplicate key "namespace: n, code: c" violates unique constraint
_DUCKDB_KEY = re.compile(r'Duplicate key "(.*)" violates', re.S)
_DUCKDB_KEY_NAME = re.compile(r"(?:^|, )(\w+): ")


def _duckdb_facts(exc: BaseException) -> DriverFacts | None:
    if not type(exc).__module__.startswith(_DUCKDB_MODULES):
        return None
    names = {cls.__name__ for cls in type(exc).__mro__}
    message = str(exc).lower()
    if "SavepointUnsupported" in names:
        return DriverFacts("0A000", unsupported="savepoint")
    if "ConstraintException" in names:
        if "foreign key" in message:
            return DriverFacts("23503")
        if "not null" in message:
            return DriverFacts("23502")
        if "check constraint" in message:
            return DriverFacts("23514")
        key = _DUCKDB_KEY.search(str(exc))
        columns = tuple(_DUCKDB_KEY_NAME.findall(key.group(1))) if key else ()
        return DriverFacts("23505", columns=columns)
    if "TransactionException" in names and "conflict" in message:
        return DriverFacts("40001", retry_reason="write-write conflict")
    if "OutOfRangeException" in names:
        return DriverFacts("22003")
    if "ConversionException" in names:
        return DriverFacts("22P02")
    if "InvalidInputException" in names and "conversion failure" in message:
        return DriverFacts("22021")  # a string DuckDB cannot store (a lone surrogate)
    if "InterruptException" in names:
        return DriverFacts("57014")
    if "ConnectionException" in names:
        return DriverFacts("08006")
    if "CatalogException" in names and "does not exist" in message:
        return DriverFacts("42P01")
    return None


def driver_facts(exc: BaseException) -> DriverFacts | None:
    """What ``exc`` (one exception, not its chain) means, for asyncmy and DuckDB errors."""
    return _mysql_facts(exc) or _duckdb_facts(exc)


#: (pattern, replacement) pairs cutting row values out of MySQL and DuckDB messages.
VALUE_BEARING_TEXT: tuple[tuple[re.Pattern[str], str], ...] = (
    # MySQL 1062: Duplicate entry 'ada@example.com-2' for key 'uq_...'
    (
        re.compile(r"Duplicate entry '.*' for key", re.S),
        "Duplicate entry [row values hidden by asyncdb] for key",
    ),
    # MySQL 1366/1292: Incorrect integer value: 'abc' for column ...
    (re.compile(r"(Incorrect [\w ]+ value): '.*?' for", re.S), r"\1 for"),
    (re.compile(r"(Truncated incorrect [\w ]+ value): '.*'", re.S), r"\1"),
    # DuckDB: Duplicate key "email: ada@example.com" violates unique constraint.
    (
        re.compile(r'Duplicate key ".*" violates', re.S),
        "Duplicate key [row values hidden by asyncdb] violates",
    ),
    (
        re.compile(r'because key ".*" (does not exist|is still referenced)', re.S),
        r"because a key \1",
    ),
    (re.compile(r"(Could not convert string) '.*?' (to)", re.S), r"\1 \2"),
    (re.compile(r"(Conversion Error:[^\n]*?)'[^\n]*'"), r"\1[value hidden by asyncdb]"),
    (re.compile(r"(value) -?[\d.e+]+ (is out of range)"), r"\1 \2"),
    (re.compile(r"(surrogate) '[^']*'"), r"\1"),
    # DuckDB, inside one transaction: ... constraint violation: duplicate key "ada@..."
    (re.compile(r'(duplicate key) "[^\n]*"', re.I), r"\1 [row values hidden by asyncdb]"),
)
