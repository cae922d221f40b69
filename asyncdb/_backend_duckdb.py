"""DuckDB engine policy (``duckdb+aioduckdb:///path.duckdb`` or ``duckdb+aioduckdb:///:memory:``).

* A file: a queue pool. Every connection of one process opens the same in-process
  database (DuckDB caches the instance per path), each on its own worker thread
  (:mod:`asyncdb._aioduckdb`). Concurrent writers are optimistic: a write-write conflict
  aborts the later transaction, which ``run_tx`` retries.
* ``:memory:``: one connection, which is the database (a second connection would open a
  second, empty database). Concurrent tasks queue for it, as on SQLite ``:memory:``.
* The dialect is registered with SQLAlchemy here by name, so DuckDB is imported only
  when a DuckDB URL is used.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import registry
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ._settings import DatabaseSettings

__all__ = ["duckdb_engine"]

registry.register("duckdb.aioduckdb", "asyncdb._dialect_duckdb", "DuckDBDialect_aioduckdb")


def duckdb_engine(
    settings: DatabaseSettings, common: dict[str, Any], pool_args: dict[str, Any]
) -> AsyncEngine:
    """The ``AsyncEngine`` for a DuckDB URL, with the policy in the module docstring."""
    return create_async_engine(settings.url, **pool_args, **common)
