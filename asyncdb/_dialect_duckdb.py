"""``duckdb+aioduckdb://``: SQLAlchemy's asyncio layer on top of the duckdb-driver dialect.

The synchronous dialect (``duckdb_driver``, a maintained fork of duckdb-engine; see
docs/backends.md for why) compiles SQL; :mod:`asyncdb._aioduckdb` runs it on a worker
thread per connection. The adaptation follows SQLAlchemy's own aiosqlite dialect: the
generic ``AsyncAdapt_dbapi_*`` classes turn awaitables into the blocking DBAPI calls the
engine makes inside its greenlet.

Two gaps of DuckDB are closed here so that models written for the other backends work
unchanged:

* An integer primary key without a default gets its own sequence
  (``<table>_<column>_seq``), created with the table and dropped after it; DuckDB has no
  ``SERIAL``.
* ``SELECT ... FOR UPDATE`` compiles without the lock clause: DuckDB has no row locks,
  and its optimistic concurrency aborts the later of two conflicting writers instead.
* Compiled statements are cached, as on the other backends (duckdb-driver opts out of
  SQLAlchemy's statement cache, which made every execution compile its statement again).
  The statement compiler is PostgreSQL's with one constant override, and the cache key
  includes the dialect, so a cached statement is what compiling it again would give.
* DuckDB has no SAVEPOINT. Beginning one raises ``NotSupportedError`` whose driver error
  is :class:`SavepointUnsupported`, which asyncdb translates into an error naming the
  feature and the backend (see :mod:`asyncdb._capabilities`).

Importing this module registers the dialect with SQLAlchemy under ``duckdb.aioduckdb``.
"""

from __future__ import annotations

from typing import Any, NoReturn

import duckdb
import duckdb_driver
from alembic.ddl.postgresql import PostgresqlImpl
from duckdb_driver.config import apply_config, get_core_config
from sqlalchemy import exc as sa_exc
from sqlalchemy import pool
from sqlalchemy.connectors.asyncio import (
    AsyncAdapt_dbapi_connection,
    AsyncAdapt_dbapi_cursor,
    AsyncAdapt_dbapi_module,
    AsyncAdapt_terminate,
)
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.postgresql.base import PGCompiler, PGDDLCompiler
from sqlalchemy.dialects.postgresql.psycopg2 import PGExecutionContext_psycopg2
from sqlalchemy.engine.url import URL
from sqlalchemy.schema import Column, Table
from sqlalchemy.sql import sqltypes
from sqlalchemy.util.concurrency import await_

from . import _aioduckdb

__all__ = ["DuckDBDialect_aioduckdb", "SavepointUnsupported", "sequence_name"]


class SavepointUnsupported(duckdb.NotImplementedException):
    """DuckDB cannot open a SAVEPOINT (nested transaction)."""


class _Cursor(AsyncAdapt_dbapi_cursor):
    __slots__ = ()


class _Connection(AsyncAdapt_terminate, AsyncAdapt_dbapi_connection):
    __slots__ = ()
    _cursor_cls = _Cursor
    _connection: Any

    def begin(self) -> None:
        try:
            await_(self._connection.begin())
        except Exception as error:
            self._handle_exception(error)

    def rollback(self) -> None:
        try:
            await_(self._connection.rollback())
        except duckdb.TransactionException as error:
            if "no transaction is active" not in str(error):
                self._handle_exception(error)
        except Exception as error:
            self._handle_exception(error)

    def close(self) -> None:
        await_(self._connection.close())

    async def _terminate_graceful_close(self) -> None:
        await self._connection.close()

    def _terminate_force_close(self) -> None:
        self._connection.stop()


class _DBAPI(AsyncAdapt_dbapi_module):
    """The DBAPI surface SQLAlchemy reads: exception classes and the param style."""

    paramstyle = "numeric_dollar"
    apilevel = "2.0"
    threadsafety = 1

    def __init__(self) -> None:
        super().__init__(_aioduckdb, dbapi_module=duckdb)
        for name in (
            "Error",
            "Warning",
            "InterfaceError",
            "DatabaseError",
            "DataError",
            "OperationalError",
            "IntegrityError",
            "InternalError",
            "ProgrammingError",
            "NotSupportedError",
            "TransactionException",
            "ParserException",
        ):
            setattr(self, name, getattr(duckdb, name, duckdb.Error))

    @staticmethod
    def Binary(value: Any) -> Any:
        return value


def sequence_name(column: Column[Any]) -> str | None:
    """The sequence asyncdb creates for ``column``, or None when it needs none."""
    table = column.table
    if not isinstance(table, Table) or column is not table._autoincrement_column:
        return None
    if column.default is not None or column.server_default is not None:
        return None
    if column.identity is not None or not isinstance(column.type, sqltypes.Integer):
        return None
    return f"{table.name}_{column.name}_seq"


class _DDLCompiler(PGDDLCompiler):
    def _sequence_sql(self, table: Table) -> tuple[str | None, str | None]:
        for column in table.columns:
            name = sequence_name(column)
            if name is not None:
                prefix = f"{self.preparer.quote_schema(table.schema)}." if table.schema else ""
                return name, prefix + self.preparer.quote(name)
        return None, None

    def get_column_specification(self, column: Column[Any], **kw: Any) -> str:
        name = sequence_name(column)
        if name is None:
            return str(super().get_column_specification(column, **kw))  # type: ignore[no-untyped-call]
        table = column.table
        prefix = f"{table.schema}." if isinstance(table, Table) and table.schema else ""
        type_sql = self.dialect.type_compiler_instance.process(column.type, type_expression=column)
        spec = f"{self.preparer.format_column(column)} {type_sql} DEFAULT nextval('{prefix}{name}')"
        return spec if column.nullable else f"{spec} NOT NULL"

    def define_constraint_cascades(self, constraint: Any) -> str:
        """DuckDB refuses ON DELETE/ON UPDATE actions: the keys are made without them (a
        referenced row cannot be deleted while rows refer to it; see docs/backends.md)."""
        return ""

    def visit_create_table(self, create: Any, **kw: Any) -> str:
        sql = str(super().visit_create_table(create, **kw))  # type: ignore[no-untyped-call]
        _, qualified = self._sequence_sql(create.element)
        return f"CREATE SEQUENCE IF NOT EXISTS {qualified};\n{sql}" if qualified else sql

    def visit_drop_table(self, drop: Any, **kw: Any) -> str:
        sql = str(super().visit_drop_table(drop, **kw))  # type: ignore[no-untyped-call]
        _, qualified = self._sequence_sql(drop.element)
        return f"{sql};\nDROP SEQUENCE IF EXISTS {qualified}" if qualified else sql


class _Compiler(PGCompiler):
    def for_update_clause(self, select: Any, **kw: Any) -> str:
        """DuckDB has no row locks; its optimistic conflicts abort a concurrent writer."""
        return ""


class _ExecutionContext(PGExecutionContext_psycopg2):
    def post_exec(self) -> None:
        """DuckDB sends no server notices (the psycopg2 context would read them)."""


class DuckDBDialect_aioduckdb(duckdb_driver.Dialect):
    """DuckDB through :mod:`asyncdb._aioduckdb` (``duckdb+aioduckdb:///path.duckdb``)."""

    driver = "aioduckdb"
    is_async = True
    has_terminate = True
    supports_statement_cache = True
    ddl_compiler = _DDLCompiler
    statement_compiler = _Compiler
    execution_ctx_cls = _ExecutionContext

    @classmethod
    def import_dbapi(cls) -> _DBAPI:  # type: ignore[override]
        return _DBAPI()

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        config = dict(cparams.pop("config", {}))
        config.update(cparams.pop("url_config", {}))
        core = get_core_config()
        extra = {k: config.pop(k) for k in list(config) if k not in core}
        config.setdefault("custom_user_agent", "asyncdb")
        database = cparams.pop("database", None) or ":memory:"
        conn = await_(_aioduckdb.connect(database, config=config, **cparams))
        if extra:
            await_(conn.run(apply_config, self, conn.raw, extra))
        # A long query would otherwise draw a progress bar on the application's stdout.
        await_(conn.run(conn.raw.execute, "SET enable_progress_bar = false"))
        return _Connection(self.loaded_dbapi, conn)  # type: ignore[arg-type]

    def do_begin(self, dbapi_connection: Any) -> None:
        dbapi_connection.begin()

    def do_savepoint(self, connection: Any, name: str) -> NoReturn:
        msg = "DuckDB does not support SAVEPOINT (nested transactions)"
        raise sa_exc.NotSupportedError("SAVEPOINT", None, SavepointUnsupported(msg))

    def do_terminate(self, dbapi_connection: Any) -> None:
        dbapi_connection.terminate()

    def get_driver_connection(self, connection: Any) -> Any:
        return connection._connection


class DuckDBImpl(PostgresqlImpl):
    """Alembic's operations for DuckDB: the PostgreSQL ones, transactional DDL."""

    __dialect__ = "duckdb"


registry.register("duckdb.aioduckdb", __name__, "DuckDBDialect_aioduckdb")
