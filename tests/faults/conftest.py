"""Managers of the fault tests: one through the fault proxy, one straight to the server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asyncdb import AsyncDatabaseManager
from tests.faults.proxy import FaultProxy
from tests.integration.conftest import manager_for, reset_schema


@pytest.fixture
async def direct(postgres_url: str) -> AsyncIterator[AsyncDatabaseManager]:
    """A manager straight to the server, on fresh tables, to read the truth after a fault."""
    db = manager_for(postgres_url)
    await db.connect()
    await reset_schema(db)
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
async def proxied(postgres_url: str, proxy: FaultProxy) -> AsyncIterator[AsyncDatabaseManager]:
    """A connected manager whose every connection goes through the fault proxy."""
    db = manager_for(proxy.url_for(postgres_url), connect_retries=1, connect_timeout=2.0)
    await db.connect()
    try:
        yield db
    finally:
        await db.dispose()
