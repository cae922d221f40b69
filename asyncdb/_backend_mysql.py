"""MariaDB/MySQL engine policy (``mysql+asyncmy://``).

* A queue pool whose recycle stays below the server's ``wait_timeout``: every new
  connection raises its session ``wait_timeout`` above ``pool_recycle`` (plus a margin),
  so the server never drops a pooled connection before asyncdb replaces it. A connection
  the server dropped anyway (a restart, a proxy) fails its checkout ping and is replaced.
* ``connect_timeout`` bounds the TCP connect and handshake; ``statement_timeout`` becomes
  MariaDB's ``max_statement_time`` (seconds) or MySQL's ``max_execution_time``
  (milliseconds, SELECT only).
* READ COMMITTED by default, as on PostgreSQL (InnoDB's own default is REPEATABLE READ,
  a snapshot taken at the first read): a unit then sees what others committed before each
  statement, the row cache may serve its reads, and a read-modify-write relies on
  ``SELECT ... FOR UPDATE`` as on PostgreSQL. ``isolation_level=`` on a unit or
  ``run_tx`` picks another level. A standalone repository call (and
  ``autocommit_session()``) runs in a short transaction of its own rather than in
  AUTOCOMMIT: the driver switches autocommit with a statement, three round trips more
  per call (``_engine.option_engines``).
* Text is ``utf8mb4`` so that any Unicode string round-trips.
* A primary key is created without its name: MariaDB/MySQL call every primary key
  ``PRIMARY`` and warn about any other name.
* ``NULLS LAST``/``NULLS FIRST``, which MariaDB and MySQL lack, compile to an
  ``x IS NULL`` sort key in front of the column (same order, as in PostgreSQL).
"""

from __future__ import annotations

import math
import re
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import PrimaryKeyConstraint
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import UnaryExpression

from ._settings import DEFAULT_POOL_RECYCLE, DatabaseSettings

__all__ = ["DEFAULT_ISOLATION_LEVEL", "WAIT_TIMEOUT_MARGIN", "mysql_engine"]

#: Seconds by which the session's wait_timeout exceeds pool_recycle.
WAIT_TIMEOUT_MARGIN = 60
#: The level every transaction gets unless a unit or run_tx asks for another.
DEFAULT_ISOLATION_LEVEL = "READ COMMITTED"


def mysql_engine(
    settings: DatabaseSettings, common: dict[str, Any], pool_args: dict[str, Any]
) -> AsyncEngine:
    """The ``AsyncEngine`` for a MariaDB/MySQL URL, with the policy in the module docstring."""
    recycle = settings.pool_recycle if settings.pool_recycle is not None else DEFAULT_POOL_RECYCLE
    pool_args = {**pool_args, "pool_recycle": recycle}
    connect_args: dict[str, Any] = {
        "connect_timeout": settings.connect_timeout,
        "charset": "utf8mb4",
    }
    engine = create_async_engine(
        settings.url,
        connect_args=connect_args,
        isolation_level=DEFAULT_ISOLATION_LEVEL,
        **pool_args,
        **common,
    )
    wait_timeout = math.ceil(recycle) + WAIT_TIMEOUT_MARGIN
    statement_timeout = settings.statement_timeout

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT VERSION(), @@SESSION.wait_timeout")
            version, server_wait = cursor.fetchone()
            if int(server_wait) < wait_timeout:
                cursor.execute(f"SET SESSION wait_timeout = {wait_timeout}")
            if statement_timeout is not None:
                # Metadata and row locks wait at most as long as a statement may run.
                lock_wait = max(1, math.ceil(statement_timeout))
                cursor.execute(f"SET SESSION lock_wait_timeout = {lock_wait}")
                cursor.execute(f"SET SESSION innodb_lock_wait_timeout = {lock_wait}")
                if "mariadb" in str(version).lower():
                    cursor.execute(f"SET SESSION max_statement_time = {float(statement_timeout)}")
                else:
                    millis = int(statement_timeout * 1000)
                    cursor.execute(f"SET SESSION max_execution_time = {millis}")
        finally:
            cursor.close()

    return engine


_NULLS = {operators.nulls_last_op: True, operators.nulls_first_op: False}
_DIRECTIONS = (operators.asc_op, operators.desc_op)


@compiles(UnaryExpression, "mysql")
@compiles(UnaryExpression, "mariadb")
def _nulls_order(element: UnaryExpression[Any], compiler: Any, **kw: Any) -> str:
    """``col ASC NULLS LAST`` → ``col IS NULL, col ASC`` (MariaDB/MySQL lack NULLS LAST)."""
    last = _NULLS.get(element.modifier) if element.modifier is not None else None
    if last is None:
        return str(compiler.visit_unary(element, **kw))
    inner = element.element
    column = inner
    if isinstance(inner, UnaryExpression) and inner.modifier in _DIRECTIONS:
        column = inner.element
    key = column.is_(None) if last else column.is_not(None)
    return f"{compiler.process(key, **kw)}, {compiler.process(inner, **kw)}"


@compiles(PrimaryKeyConstraint, "mysql")
@compiles(PrimaryKeyConstraint, "mariadb")
def _unnamed_primary_key(element: PrimaryKeyConstraint, compiler: Any, **kw: Any) -> str:
    """``CONSTRAINT pk_t PRIMARY KEY (id)`` → ``PRIMARY KEY (id)`` (the name is ignored)."""
    sql = str(compiler.visit_primary_key_constraint(element, **kw))
    return _CONSTRAINT_NAME.sub("", sql, count=1)


_CONSTRAINT_NAME = re.compile(r"^CONSTRAINT\s+(`[^`]*`|\S+)\s+")
