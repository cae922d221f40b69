"""Tests of fastapi_app.py with asyncdb's pytest plugin.

Run them with ``pytest docs/examples/test_fastapi_app.py`` (add ``--asyncdb-url=...`` for
PostgreSQL). ``asyncdb_manager`` is the app's process-wide manager for each test, and
``asyncdb_transaction`` rolls back whatever the requests committed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi_app import Todo, app

from asyncdb import AsyncDatabaseManager, Repository, get_audit_logs

pytestmark = pytest.mark.usefixtures("asyncdb_transaction")


@pytest.fixture
async def client(asyncdb_manager: AsyncDatabaseManager) -> AsyncIterator[httpx.AsyncClient]:
    # The plugin's manager is connected and has the tables; no lifespan needed.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_create_and_list(client: httpx.AsyncClient) -> None:
    created = await client.post("/todos", json={"title": "write docs"})
    assert created.status_code == 201
    assert created.json() == {"id": created.json()["id"], "title": "write docs", "done": False}
    listed = await client.get("/todos")
    assert [t["title"] for t in listed.json()] == ["write docs"]


async def test_every_change_is_audited_with_request_and_user(
    client: httpx.AsyncClient, asyncdb_manager: AsyncDatabaseManager
) -> None:
    headers = {"X-Request-ID": "req-1", "X-User-ID": "ada"}
    todo = (await client.post("/todos", json={"title": "a"}, headers=headers)).json()
    done = await client.post(f"/todos/{todo['id']}/done", headers={"X-User-ID": "bob"})
    assert done.json()["done"] is True
    history = (await client.get(f"/todos/{todo['id']}/history")).json()
    assert [(h["action"], h["user"]) for h in history] == [("CREATE", "ada"), ("UPDATE", "bob")]
    assert history[0]["request"] == "req-1"
    assert done.headers["x-request-id"] == history[1]["request"]
    assert len(await get_audit_logs(asyncdb_manager, correlation_id="req-1")) == 1


async def test_error_status_rolls_the_whole_request_back(
    client: httpx.AsyncClient, asyncdb_manager: AsyncDatabaseManager
) -> None:
    response = await client.post("/todos/import", json=["one", "two", " "])
    assert response.status_code == 422
    assert await Repository(Todo, asyncdb_manager).count() == 0
    assert (await client.post("/todos/import", json=["one", "two"])).json() == {"imported": 2}
    assert await Repository(Todo, asyncdb_manager).count() == 2


async def test_missing_todo_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.post("/todos/999/done")).status_code == 404
    assert (await client.delete("/todos/999")).status_code == 404
    missing = await client.get("/todos/999", headers={"X-Request-ID": "req-404"})
    assert missing.status_code == 404
    assert missing.json()["error"] == "NotFoundError"
    assert missing.headers["x-request-id"] == "req-404"


async def test_delete_is_soft(
    client: httpx.AsyncClient, asyncdb_manager: AsyncDatabaseManager
) -> None:
    todo = (await client.post("/todos", json={"title": "gone"})).json()
    assert (await client.delete(f"/todos/{todo['id']}")).status_code == 204
    assert (await client.get("/todos")).json() == []
    kept = await Repository(Todo, asyncdb_manager).get(todo["id"], with_deleted=True)
    assert kept.deleted_at is not None
