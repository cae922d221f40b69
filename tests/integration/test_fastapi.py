"""asyncdb.fastapi driven through a real FastAPI app over httpx's ASGI transport."""

# No `from __future__ import annotations`: FastAPI resolves the routes' Annotated aliases,
# which are local to build_app(), from the annotations themselves.

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    ConflictError,
    DatabaseUnavailableError,
    ManagerState,
    Repository,
    get_audit_context,
    get_audit_logs,
    set_db_manager,
)
from asyncdb.fastapi import (
    AuditMiddleware,
    Dependencies,
    health_endpoint,
    is_error_status,
    lifespan,
)
from tests.integration.conftest import manager_for, names, wait_until
from tests.integration.models import Item


def user_from_header(conn: HTTPConnection) -> str | None:
    return conn.headers.get("x-user")


def build_app(
    db: AsyncDatabaseManager,
    *,
    rollback_on: Callable[[int], bool] = is_error_status,
    gate: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
) -> FastAPI:
    """The app under test: every route shape the integration promises to handle."""
    deps = Dependencies(db, rollback_on=rollback_on)
    UnitOfWork = Annotated[AsyncUnitOfWork, Depends(deps.unit_of_work)]
    Session = Annotated[AsyncSession, Depends(deps.session)]
    Items = Annotated[Repository[Item], Depends(deps.repository(Item))]

    app = FastAPI(lifespan=lifespan(db))
    app.add_middleware(AuditMiddleware, user_id=user_from_header)
    app.add_api_route("/health", health_endpoint(db), methods=["GET"])

    @app.post("/items")
    async def create_item(name: str, items: Items) -> dict[str, Any]:
        item = await items.create(name=name)
        return {"id": item.id, "context": get_audit_context().as_dict()}

    @app.post("/items/fail")
    async def create_then_fail(name: str, items: Items) -> None:
        await items.create(name=name)
        raise RuntimeError("boom")

    @app.post("/items/http-error")
    async def create_then_http_error(name: str, items: Items) -> None:
        await items.create(name=name)
        raise HTTPException(status_code=422, detail="rejected")

    @app.post("/items/status")
    async def create_with_status(name: str, status: int, items: Items, response: Response) -> None:
        await items.create(name=name)
        response.status_code = status

    @app.post("/items/mixed")
    async def mixed(name: str, uow: UnitOfWork, items: Items, fail: bool = False) -> None:
        # Three ways in, one transaction: the dependency's repository, a repository
        # built on the manager (joins the task's unit), and the unit's session.
        assert uow.get_repository(Item).db is db
        await items.create(name=f"{name}-dep")
        await Repository(Item, db).create(name=f"{name}-db")
        uow.session.add(Item(name=f"{name}-session"))
        if fail:
            raise HTTPException(status_code=409)

    @app.exception_handler(ConflictError)
    async def conflict(request: Request, exc: ConflictError) -> Response:
        return Response(status_code=409)

    @app.post("/items/sku")
    async def add_with_sku(sku: str, uow: UnitOfWork) -> None:
        # Not flushed: the unique violation surfaces at the commit, after the handler.
        uow.session.add(Item(name=sku, sku=sku))

    @app.post("/items/session")
    async def with_session(name: str, session: Session) -> None:
        session.add(Item(name=name))
        await session.commit()

    @app.get("/items/slow")
    async def slow(uow: UnitOfWork) -> None:
        await uow.get_repository(Item).create(name="never")
        assert started is not None and gate is not None
        started.set()
        await gate.wait()

    return app


@pytest.fixture
async def client(db: AsyncDatabaseManager) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(db)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
    ):
        yield http


@pytest.mark.slow
async def test_concurrent_requests_write_audit_rows_with_their_own_ids(
    db: AsyncDatabaseManager, client: httpx.AsyncClient
) -> None:
    requests = [(str(uuid.uuid4()), f"user-{n}") for n in range(200)]

    async def one(request_id: str, user: str) -> tuple[str, str, httpx.Response]:
        response = await client.post(
            "/items",
            params={"name": f"item-{user}"},
            headers={"X-Request-ID": request_id, "X-User": user},
        )
        return request_id, user, response

    results = await asyncio.gather(*(one(rid, user) for rid, user in requests))

    for request_id, user, response in results:
        assert response.status_code == 200, response.text
        assert response.headers["x-request-id"] == request_id
        body = response.json()
        assert body["context"]["correlation_id"] == request_id
        assert body["context"]["user_id"] == user
        rows = await get_audit_logs(db, correlation_id=request_id)
        assert [(r.table_name, r.entity_id, r.user_id, r.action) for r in rows] == [
            ("t_item", str(body["id"]), user, "CREATE")
        ]
    assert len(await names(db)) == 200
    assert db.pool_status()["checked_out"] == 0


async def test_handler_that_raises_leaves_no_row_and_no_audit_row(db: AsyncDatabaseManager) -> None:
    app = build_app(db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.post(
            "/items/fail", params={"name": "x"}, headers={"X-Request-ID": "req-fail"}
        )
    assert response.status_code == 500
    assert await names(db) == []
    assert await get_audit_logs(db, correlation_id="req-fail") == []
    assert await get_audit_logs(db) == []


async def test_http_exception_rolls_back(
    db: AsyncDatabaseManager, client: httpx.AsyncClient
) -> None:
    response = await client.post("/items/http-error", params={"name": "x"})
    assert response.status_code == 422
    assert await names(db) == []
    assert await get_audit_logs(db) == []


async def test_error_status_set_on_response_rolls_back(
    db: AsyncDatabaseManager, client: httpx.AsyncClient
) -> None:
    rolled_back = await client.post("/items/status", params={"name": "bad", "status": 409})
    kept = await client.post("/items/status", params={"name": "good", "status": 201})
    assert (rolled_back.status_code, kept.status_code) == (409, 201)
    assert await names(db) == ["good"]


async def test_the_app_chooses_which_statuses_roll_back(db: AsyncDatabaseManager) -> None:
    app = build_app(db, rollback_on=lambda status: status >= 500)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        conflict = await http.post("/items/status", params={"name": "kept", "status": 409})
        failure = await http.post("/items/status", params={"name": "gone", "status": 503})
    assert (conflict.status_code, failure.status_code) == (409, 503)
    assert await names(db) == ["kept"]


async def test_repositories_and_session_join_the_request_unit(
    db: AsyncDatabaseManager, client: httpx.AsyncClient
) -> None:
    failed = await client.post(
        "/items/mixed", params={"name": "a", "fail": True}, headers={"X-Request-ID": "rq-a"}
    )
    assert failed.status_code == 409
    assert await names(db) == []
    assert await get_audit_logs(db) == []

    ok = await client.post("/items/mixed", params={"name": "b"}, headers={"X-Request-ID": "rq-b"})
    assert ok.status_code == 200, ok.text
    assert await names(db) == ["b-db", "b-dep", "b-session"]
    rows = await get_audit_logs(db, correlation_id="rq-b")
    assert len(rows) == 3


async def test_unit_commits_before_the_response_is_sent(db: AsyncDatabaseManager) -> None:
    events: list[str] = []
    deps = Dependencies(db)
    app = FastAPI()

    @app.post("/")
    async def handler(uow: Annotated[AsyncUnitOfWork, Depends(deps.unit_of_work)]) -> None:
        uow.session.add(Item(name="x"))
        uow.on_commit(lambda: events.append("commit"))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            events.append(f"start {message['status']}")
            events.append(f"checked out {db.pool_status()['checked_out']}")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }
    await app(scope, receive, send)
    assert events == ["commit", "start 200", "checked out 0"]


async def test_a_failed_commit_becomes_the_response(
    db: AsyncDatabaseManager, client: httpx.AsyncClient
) -> None:
    first = await client.post("/items/sku", params={"sku": "a-1"})
    second = await client.post("/items/sku", params={"sku": "a-1"}, headers={"X-Request-ID": "dup"})
    assert (first.status_code, second.status_code) == (200, 409)
    assert second.headers["x-request-id"] == "dup"
    assert await names(db) == ["a-1"]
    assert await get_audit_logs(db, correlation_id="dup") == []
    assert db.pool_status()["checked_out"] == 0


async def test_session_dependency(db: AsyncDatabaseManager, client: httpx.AsyncClient) -> None:
    response = await client.post("/items/session", params={"name": "s"})
    assert response.status_code == 200
    assert await names(db) == ["s"]
    assert db.pool_status()["checked_out"] == 0


async def test_client_disconnect_mid_request_returns_the_connection(
    db: AsyncDatabaseManager,
) -> None:
    gate, started = asyncio.Event(), asyncio.Event()
    app = build_app(db, gate=gate, started=started)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        request = asyncio.create_task(http.get("/items/slow"))
        await started.wait()
        assert db.pool_status()["checked_out"] == 1
        # The client goes away: the server cancels the request (httpx's ASGI transport
        # runs the app in the client's task, as servers that cancel on disconnect do).
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await wait_until(lambda: db.pool_status()["checked_out"] == 0)
    assert await names(db) == []


async def test_middleware_request_id_and_user(client: httpx.AsyncClient) -> None:
    given = await client.post(
        "/items", params={"name": "a"}, headers={"X-Request-ID": "abc-123", "X-User": "7"}
    )
    assert given.headers["x-request-id"] == "abc-123"
    assert given.json()["context"]["user_id"] == "7"

    missing = await client.post("/items", params={"name": "b"})
    generated = missing.headers["x-request-id"]
    assert uuid.UUID(generated)
    assert missing.json()["context"] == {
        "user_id": None,
        "session_id": None,
        "correlation_id": generated,
        "extra": {},
    }

    for bad in ("x" * 129, "has space", "semi;colon", "-leading-dash", ""):
        response = await client.post("/items", params={"name": "c"}, headers={"X-Request-ID": bad})
        echoed = response.headers["x-request-id"]
        assert echoed != bad
        assert uuid.UUID(echoed)
        assert response.json()["context"]["correlation_id"] == echoed


async def test_middleware_async_user_getter_and_other_scopes() -> None:
    seen: list[str | None] = []

    async def user(conn: HTTPConnection) -> int:
        return 42

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(get_audit_context().user_id)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    middleware = AuditMiddleware(inner, user_id=user)
    transport = httpx.ASGITransport(app=middleware)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/")
    assert response.status_code == 204
    assert response.headers["x-request-id"]

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        pass

    await middleware({"type": "lifespan"}, receive, send)
    assert seen == ["42", None]
    assert get_audit_context().user_id is None


async def test_health_endpoint(client: httpx.AsyncClient, db: AsyncDatabaseManager) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["healthy"] is True
    assert body["backend"] == db.backend
    assert response.headers["cache-control"] == "no-store"


async def test_health_endpoint_unhealthy_is_503() -> None:
    dead = AsyncDatabaseManager(
        "postgresql+asyncpg://nobody:secret@127.0.0.1:1/none", connect_retries=1, connect_timeout=2
    )
    app = FastAPI()
    app.add_api_route("/health", health_endpoint(dead, timeout=5), methods=["GET"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["healthy"] is False
    assert body["error"]
    assert "secret" not in response.text


async def test_lifespan_connects_and_disposes(db_url: str) -> None:
    manager = manager_for(db_url)
    app = FastAPI(lifespan=lifespan(manager))
    async with app.router.lifespan_context(app):
        assert manager.state is ManagerState.CONNECTED
    assert manager.state is ManagerState.DISPOSED


async def test_lifespan_leaves_a_connected_manager_to_its_owner(db: AsyncDatabaseManager) -> None:
    app = FastAPI(lifespan=lifespan(db))
    async with app.router.lifespan_context(app):
        pass
    assert db.state is ManagerState.CONNECTED


async def test_lifespan_retries_then_fails_start_up() -> None:
    manager = AsyncDatabaseManager(
        "postgresql+asyncpg://nobody@127.0.0.1:1/none",
        connect_retries=2,
        retry_backoff=0.0,
        connect_timeout=2,
    )
    app = FastAPI(lifespan=lifespan(manager))
    with pytest.raises(DatabaseUnavailableError, match="after 2 attempt"):
        async with app.router.lifespan_context(app):
            pass  # pragma: no cover
    assert manager.connect_attempts == 2
    assert manager.state is ManagerState.NEW


def test_dependencies_repr_and_default_rule() -> None:
    deps = Dependencies(AsyncDatabaseManager("sqlite+aiosqlite:///:memory:"))
    assert repr(deps).startswith("<Dependencies db=sqlite+aiosqlite://")
    assert is_error_status(400) and is_error_status(503)
    assert not is_error_status(201) and not is_error_status(304)


async def test_factories_default_to_the_process_wide_manager(db: AsyncDatabaseManager) -> None:
    previous = set_db_manager(db)
    try:
        deps = Dependencies()
        assert deps.db is db
        assert repr(deps) == "<Dependencies db=get_db_manager()>"
        app = FastAPI(lifespan=lifespan())
        app.add_api_route("/health", health_endpoint(), methods=["GET"])

        @app.post("/items")
        async def create(
            items: Annotated[Repository[Item], Depends(deps.repository(Item))],
        ) -> None:
            await items.create(name="default")

        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as http,
        ):
            assert (await http.post("/items")).status_code == 200
            assert (await http.get("/health")).status_code == 200
        assert db.state is ManagerState.CONNECTED
        assert await names(db) == ["default"]
    finally:
        set_db_manager(previous)
