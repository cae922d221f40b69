"""asyncdb.fastapi's error mapping, read-only units and audit user dependency (httpx ASGI)."""

# No `from __future__ import annotations`: FastAPI resolves the Annotated aliases below.

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Header
from sqlalchemy import insert, text

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    CommitOutcomeUnknownError,
    ConnectionLostError,
    DatabaseUnavailableError,
    PoolTimeoutError,
    Repository,
    RetryableError,
    ValidationError,
    get_audit_logs,
)
from asyncdb.fastapi import AuditMiddleware, Dependencies, install_error_handlers
from tests.integration.models import Account, Item

auth_calls: list[str] = []


def current_user(authorization: Annotated[str, Header()] = "") -> str:
    """The app's auth dependency: decodes the token once per request."""
    auth_calls.append(authorization)
    return authorization.removeprefix("Bearer ") or "anonymous"


def build_app(db: AsyncDatabaseManager) -> FastAPI:
    deps = Dependencies(db, user_id=current_user)
    Items = Annotated[Repository[Item], Depends(deps.repository(Item))]
    Accounts = Annotated[Repository[Account], Depends(deps.repository(Account))]
    ReadItems = Annotated[Repository[Item], Depends(deps.repository(Item, read_only=True))]
    ReadUnit = Annotated[AsyncUnitOfWork, Depends(deps.read_only_unit)]
    Unit = Annotated[AsyncUnitOfWork, Depends(deps.unit_of_work)]
    User = Annotated[str, Depends(current_user)]

    app = FastAPI()
    app.add_middleware(AuditMiddleware)
    install_error_handlers(app)

    @app.get("/items/{item_id}")
    async def get_item(item_id: int, items: ReadItems) -> dict[str, Any]:
        item = await items.get(item_id)
        return {"id": item.id, "name": item.name}

    @app.post("/items")
    async def create_item(name: str, user: User, items: Items) -> dict[str, Any]:
        item = await items.create(name=name)
        return {"id": item.id, "by": user}

    @app.post("/accounts")
    async def create_account(email: str, accounts: Accounts) -> dict[str, Any]:
        return {"id": (await accounts.create(email=email)).id}

    @app.get("/bad-filter")
    async def bad_filter(items: ReadItems) -> list[int]:
        return [i.id for i in await items.find_by(no_such_field=1)]

    @app.post("/write-in-read-only")
    async def write_in_read_only(unit: ReadUnit) -> None:
        await unit.get_repository(Item).create(name="x")

    @app.get("/read-only-mode")
    async def read_only_mode(unit: ReadUnit) -> dict[str, Any]:
        return {"read_only": unit.read_only}

    @app.get("/unavailable")
    async def unavailable() -> None:
        raise DatabaseUnavailableError("The database is down. Try again later.")

    @app.get("/connection-lost")
    async def connection_lost() -> None:
        raise ConnectionLostError("The connection to the database was lost. Try again.")

    @app.post("/items-rejected")
    async def items_rejected(unit: Unit) -> None:
        # Raw SQL, past the repository's own checks: a name too long for PostgreSQL's
        # VARCHAR(100), an int SQLite's driver cannot send.
        await unit.session.execute(insert(Item).values(name="x" * 200, qty=2**70))

    @app.get("/contention")
    async def contention() -> None:
        raise RetryableError("The transaction kept meeting a deadlock. Try again later.")

    @app.get("/pool-timeout")
    async def pool_timeout() -> None:
        raise PoolTimeoutError("No pooled connection became free. Try again later.")

    @app.post("/commit-lost")
    async def commit_lost() -> None:
        raise CommitOutcomeUnknownError(
            "The connection was lost while committing: the transaction may or may not have "
            "committed. Check before doing it again."
        )

    @app.get("/data-error")
    async def data_error() -> None:
        raise ValidationError("The value is too long for its column. Shorten it.")

    return app


@pytest.fixture
async def client(db: AsyncDatabaseManager) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app(db))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def test_not_found_is_a_json_404_with_the_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/items/999", headers={"x-request-id": "req-404"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "req-404"
    assert response.json()["error"] == "NotFoundError"
    assert response.json()["detail"]


async def test_conflict_is_409_naming_the_column_on_every_backend(
    client: httpx.AsyncClient, db: AsyncDatabaseManager
) -> None:
    assert (await client.post("/accounts", params={"email": "ada@example.com"})).status_code == 200
    response = await client.post("/accounts", params={"email": "ada@example.com"})
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "ConflictError"
    assert body["fields"] == ["email"]
    assert "ada@example.com" not in response.text
    assert "x-request-id" in response.headers


async def test_validation_errors_are_422(client: httpx.AsyncClient) -> None:
    for path in ("/bad-filter", "/data-error"):
        response = await client.get(path)
        assert response.status_code == 422, path
        assert response.json()["error"] == "ValidationError"
        assert "x-request-id" in response.headers


async def test_a_value_the_database_rejects_is_a_422_data_error_on_every_backend(
    client: httpx.AsyncClient, db: AsyncDatabaseManager
) -> None:
    response = await client.post("/items-rejected")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "DataError"
    assert "xxxxx" not in response.text and str(2**70) not in response.text
    assert "retry-after" not in response.headers
    assert "x-request-id" in response.headers
    async with db.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM t_item"))).scalar() == 0


async def test_unavailable_and_pool_timeout_are_503_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    for path, error in (
        ("/unavailable", "DatabaseUnavailableError"),
        ("/pool-timeout", "PoolTimeoutError"),
        ("/connection-lost", "ConnectionLostError"),
        ("/contention", "RetryableError"),
    ):
        response = await client.get(path)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"] == error
        assert "x-request-id" in response.headers


async def test_a_write_in_the_read_only_unit_is_refused(
    client: httpx.AsyncClient, db: AsyncDatabaseManager
) -> None:
    assert (await client.get("/read-only-mode")).json() == {"read_only": True}
    response = await client.post("/write-in-read-only")
    assert response.status_code == 500, response.text
    assert response.json()["error"] == "TransactionError"
    assert response.headers["content-type"] == "application/json"
    assert "x-request-id" in response.headers
    async with db.session() as session:
        assert (await session.execute(text("SELECT count(*) FROM t_item"))).scalar() == 0


async def test_read_only_route_reads_committed_rows(client: httpx.AsyncClient) -> None:
    created = (await client.post("/items", params={"name": "lamp"})).json()
    response = await client.get(f"/items/{created['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": created["id"], "name": "lamp"}


async def test_audit_user_comes_from_the_apps_dependency_parsed_once(
    client: httpx.AsyncClient, db: AsyncDatabaseManager
) -> None:
    auth_calls.clear()
    response = await client.post(
        "/items", params={"name": "desk"}, headers={"authorization": "Bearer u-42"}
    )
    assert response.json()["by"] == "u-42"
    assert auth_calls == ["Bearer u-42"]  # auth and audit share one call
    (row,) = await get_audit_logs(db, table_name="t_item")
    assert row.user_id == "u-42"


async def test_a_commit_with_unknown_outcome_is_a_500_that_says_so(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/commit-lost")
    assert response.status_code == 500
    assert "retry-after" not in response.headers
    assert response.json()["error"] == "CommitOutcomeUnknownError"
    assert "may or may not have committed" in response.json()["detail"]
    assert "x-request-id" in response.headers


async def test_a_read_only_route_does_not_queue_behind_a_writer(
    client: httpx.AsyncClient, db: AsyncDatabaseManager, backend: str
) -> None:
    if backend == "sqlite-memory":
        pytest.skip("one connection: a reader waits for the writer's connection itself")
    item_id = (await client.post("/items", params={"name": "lamp"})).json()["id"]
    locked, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with AsyncUnitOfWork(db) as unit:  # holds SQLite's write lock until released
            await unit.get_repository(Item).create(name="pending")
            locked.set()
            await release.wait()

    task = asyncio.create_task(writer())
    try:
        await locked.wait()
        response = await asyncio.wait_for(client.get(f"/items/{item_id}"), timeout=20)
        assert response.status_code == 200
        assert response.json()["name"] == "lamp"
    finally:
        release.set()
        await task
