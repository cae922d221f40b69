"""A FastAPI request that wrote reads its own write back; other requests use the replica."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI, HTTPException

from asyncdb import AsyncDatabaseManager, Repository
from tests.integration.models import Counter
from tests.integration.scaleout.servers import MAIN_PORT, PgServer, wait_replayed

pytestmark = pytest.mark.scaleout


def build_app(db: AsyncDatabaseManager) -> FastAPI:
    app = FastAPI()
    counters = Repository(Counter, db)

    @app.post("/counters/{ident}")
    async def create(ident: int) -> dict[str, object]:
        await counters.create(id=ident, value=ident * 10)
        again = await counters.get_by_id(ident)  # read back in the same request
        return {"value": None if again is None else again.value}

    @app.get("/counters/{ident}")
    async def read(ident: int) -> dict[str, object]:
        found = await counters.get_by_id(ident)
        if found is None:
            raise HTTPException(status_code=404)
        return {"value": found.value}

    return app


async def test_a_request_reads_its_own_write(
    routed: AsyncDatabaseManager, standby: PgServer
) -> None:
    transport = httpx.ASGITransport(app=build_app(routed))
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:

        async def request(method: str, path: str) -> httpx.Response:
            # A server runs each request in its own task.
            return await asyncio.create_task(client.request(method, path))

        standby.sql("SELECT pg_wal_replay_pause()")
        try:
            created = await request("POST", "/counters/4")
            assert created.json() == {"value": 40}
            # Another request did not write: it reads the replica, which has not
            # replayed the insert yet.
            assert (await request("GET", "/counters/4")).status_code == 404
        finally:
            standby.sql("SELECT pg_wal_replay_resume()")
        wait_replayed(MAIN_PORT, standby)
        assert (await request("GET", "/counters/4")).json() == {"value": 40}
