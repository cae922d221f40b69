"""Probing a database: the first connection with retry and backoff, and health pings.

The manager calls these; they know engines, settings and the read router, never the
manager itself. Every probe runs without a transaction: on SQLite a ``BEGIN IMMEDIATE``
would make a health check queue behind every writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ._engine import JOURNAL_MODE, create_engine, option_engines
from ._errors import ConfigurationError, DatabaseUnavailableError
from ._health import pool_status
from ._retry import backoff_delay, is_auth_failure, is_connect_retryable
from ._routing import Router
from ._settings import DatabaseSettings
from ._translate import exception_summary

__all__ = [
    "connect_with_retry",
    "no_transaction",
    "node_health",
    "ping",
    "ping_new_engine",
    "pool_figures",
]

logger = logging.getLogger("asyncdb")


def no_transaction(engine: AsyncEngine, settings: DatabaseSettings) -> AsyncEngine:
    """The autocommit view of ``engine`` (no BEGIN around a probe)."""
    return option_engines(engine, settings.backend, pgbouncer=settings.pgbouncer)["autocommit"]


async def connect_with_retry(
    engine: AsyncEngine,
    settings: DatabaseSettings,
    *,
    on_attempt: Callable[[int], None],
) -> str | None:
    """Open and close a first connection, retrying connection-level failures.

    Makes ``settings.connect_retries`` attempts in all with jittered exponential
    backoff; bad credentials and bad database names fail at once
    (``ConfigurationError``), anything else that is not a connection failure too
    (``DatabaseUnavailableError``). ``on_attempt`` hears each attempt's number. Returns
    SQLite's journal mode as the first connection set it (None elsewhere).
    """
    url = settings.masked_url
    attempts = settings.connect_retries
    for attempt in range(1, attempts + 1):
        on_attempt(attempt)
        try:
            async with no_transaction(engine, settings).connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
                if settings.backend != "sqlite":
                    return None
                raw = await conn.get_raw_connection()
                mode = raw.info.get(JOURNAL_MODE)
                return mode if isinstance(mode, str) else None
        except Exception as exc:
            if is_auth_failure(exc):
                msg = (
                    f"The server at {url} rejected the credentials or the database "
                    "name. Check the user, password and database in the URL."
                )
                raise ConfigurationError(msg) from exc
            retry = is_connect_retryable(exc)
            if not retry or attempt == attempts:
                reason = exception_summary(exc) if not retry else type(exc).__name__
                msg = (
                    f"Could not connect to {url} after {attempt} attempt(s) ({reason}). "
                    "Check that the server is running and reachable, or raise connect_retries."
                )
                raise DatabaseUnavailableError(msg) from exc
            delay = backoff_delay(attempt - 1, settings.retry_backoff)
            logger.warning(
                "Connection attempt %d/%d to %s failed (%s); retrying in %.2f s",
                attempt,
                attempts,
                url,
                type(exc).__name__,
                delay,
            )
            await asyncio.sleep(delay)
    msg = f"connect_retries must be at least 1 (got {attempts})."
    raise ConfigurationError(msg)


async def ping(engine: AsyncEngine) -> None:
    """``SELECT 1`` on a connection of ``engine`` (an autocommit engine)."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def ping_new_engine(settings: DatabaseSettings) -> None:
    """``SELECT 1`` through a throw-away engine (a health check before ``connect()``)."""
    engine = create_engine(settings.replace(pre_ping=False))
    try:
        await ping(no_transaction(engine, settings))
    finally:
        await engine.dispose()


def pool_figures(engine: AsyncEngine | None) -> dict[str, Any]:
    """:func:`pool_status` of ``engine``'s pool; empty when there is no engine."""
    return {} if engine is None else pool_status(engine.sync_engine.pool)


async def node_health(
    router: Router | None, timeout: float, primary: dict[str, Any]
) -> list[dict[str, Any]]:
    """Per-node figures: ``primary``, then each replica probed now (in parallel)."""
    if router is None:
        return []
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(router.probe(node) for node in router.nodes)), timeout
        )
    return [primary, *router.snapshot()["replicas"]]
