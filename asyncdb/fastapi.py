"""FastAPI integration: lifespan, request-scoped dependencies, error handlers, audit, health.

Install with the ``fastapi`` extra (``pip install 'asyncdb-toolkit[fastapi]'``)::

    from typing import Annotated

    from fastapi import Depends, FastAPI

    from asyncdb import AsyncUnitOfWork, Repository
    from asyncdb.fastapi import (
        AuditMiddleware, Dependencies, health_endpoint, install_error_handlers, lifespan,
    )

    deps = Dependencies(user_id=current_user_id)  # the process-wide manager (ASYNCDB_*)
    UnitOfWork = Annotated[AsyncUnitOfWork, Depends(deps.unit_of_work)]
    Users = Annotated[Repository[User], Depends(deps.repository(User))]
    ReadUsers = Annotated[Repository[User], Depends(deps.repository(User, read_only=True))]

    app = FastAPI(lifespan=lifespan())
    app.add_middleware(AuditMiddleware)
    install_error_handlers(app)  # NotFoundError -> 404, ConflictError -> 409, ...
    app.add_api_route("/health", health_endpoint(), methods=["GET"])

Each factory takes the manager to use, or None (the default) for the process-wide one,
:func:`~asyncdb.get_db_manager`, looked up when it is needed: the pytest plugin's
``asyncdb_manager`` installs itself there, so tests reach an app built at import time.

The dependencies run in the request's task, so ``Repository(Model, db)`` calls made by
the handler join the request's unit of work, and the audit context that the middleware
opens reaches every audit row the request writes.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._context import audit_context
from ._errors import (
    AsyncDBError,
    CommitOutcomeUnknownError,
    ConflictError,
    ConnectionLostError,
    DatabaseUnavailableError,
    DataError,
    NotFoundError,
    PoolTimeoutError,
    RetryableError,
    ValidationError,
)
from ._helpers import get_db_manager
from ._manager import AsyncDatabaseManager, ManagerState
from ._repository import Repository
from ._uow import AsyncUnitOfWork

__all__ = [
    "REQUEST_ID_HEADER",
    "AuditMiddleware",
    "Dependencies",
    "error_response",
    "health_endpoint",
    "install_error_handlers",
    "is_error_status",
    "lifespan",
]

M = TypeVar("M")

#: The header that carries the correlation id, in and out.
REQUEST_ID_HEADER = "X-Request-ID"
# What a client may send as a request id: a UUID, a ULID, a trace id, a short token.
# Anything else (too long, spaces, control characters) is replaced by a fresh UUID, so a
# client cannot write arbitrary text into the audit log or the response headers.
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}")

UserIdGetter = Callable[[HTTPConnection], "object | Awaitable[object]"]


def lifespan(
    db: AsyncDatabaseManager | None = None,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """A FastAPI ``lifespan`` that connects ``db`` at start-up and disposes it at shutdown.

    ``db`` defaults to the process-wide manager (:func:`~asyncdb.get_db_manager`).

    ``connect()`` retries connection failures with backoff (``connect_retries`` and
    ``retry_backoff`` settings, i.e. ``ASYNCDB_CONNECT_RETRIES``), so an app that starts
    before its database is ready waits for it; it fails start-up with
    :class:`~asyncdb.DatabaseUnavailableError` when the database never answers.

    A manager that is already connected (a test's, say) is used as it is and left
    connected: the lifespan disposes only what it connected. To run more start-up
    work, enter it inside your own lifespan::

        @contextlib.asynccontextmanager
        async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with lifespan(db)(app):
                await warm_caches()
                yield
    """

    @contextlib.asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[None]:
        manager = db if db is not None else get_db_manager()
        owned = manager.state is ManagerState.NEW
        if owned:
            await manager.connect()
        try:
            yield
        finally:
            if owned:
                await manager.dispose()

    return _lifespan


def is_error_status(status: int) -> bool:
    """The default rollback rule: 4xx and 5xx roll the request's unit of work back."""
    return status >= 400


class _StatusRollback(Exception):
    """Raised inside the request's unit to roll it back for an error status."""


def _anonymous() -> None:
    """The audit user when ``Dependencies`` has no ``user_id`` dependency: the context's."""
    return None


class Dependencies:
    """Request-scoped database dependencies on ``db`` (default: the process-wide manager).

    Use each attribute with ``Depends`` (ideally through an ``Annotated`` alias):

    ``session``
        An ``AsyncSession`` for the request; the handler commits it itself. Closed when
        the handler's response is ready, before it is sent.
    ``unit_of_work``
        An :class:`~asyncdb.AsyncUnitOfWork` for the request. It commits when the
        handler returns without error, before the response is sent (a failed commit
        becomes the response: an exception handler's or a 500). It rolls back when the
        handler raises (``HTTPException`` included), and when the handler set an error
        status on the injected ``Response`` (``response.status_code = 409``);
        ``rollback_on`` decides which statuses count (default: 400 and above). A
        ``Response`` object the handler returns is not seen: raise ``HTTPException``
        or set ``response.status_code`` to roll back.
    ``read_only_unit``
        A read-only :class:`~asyncdb.AsyncUnitOfWork` for routes that only read: no write
        transaction (SQLite: no ``BEGIN IMMEDIATE`` queued behind writers; PostgreSQL:
        ``READ ONLY``). A write in it is a ``TransactionError``. Use it or
        ``unit_of_work`` in one route, not both.
    ``repository(Model, read_only=False)``
        A :class:`~asyncdb.Repository` bound to the request's unit (the read-only one with
        ``read_only=True``).

    ``user_id`` is a dependency of the app (say, one that returns the authenticated
    user's id from the token the auth dependency already decoded); the request's units
    write it into their audit rows. FastAPI runs it once per request, shared with auth.

    Every use in one request shares one unit of work, and ``Repository(Model, db)``
    calls made by the handler join it too.

    The session and the unit are closed as soon as the response is built (FastAPI's
    ``scope="function"`` dependencies), so a slow client never holds a pooled connection.
    """

    session: Callable[..., Awaitable[AsyncSession]]
    unit_of_work: Callable[..., Awaitable[AsyncUnitOfWork]]
    read_only_unit: Callable[..., Awaitable[AsyncUnitOfWork]]

    def __init__(
        self,
        db: AsyncDatabaseManager | None = None,
        *,
        rollback_on: Callable[[int], bool] = is_error_status,
        user_id: Callable[..., Any] | None = None,
    ) -> None:
        self._db = db
        self.rollback_on = rollback_on
        self.user_id = user_id

        async def open_session() -> AsyncIterator[AsyncSession]:
            async with self.db.session() as session:
                yield session

        @contextlib.asynccontextmanager
        async def run_unit(
            response: Response, user: object, *, read_only: bool
        ) -> AsyncIterator[AsyncUnitOfWork]:
            # Without a user dependency the unit takes the user from the audit context.
            unit_of_work = (
                AsyncUnitOfWork(self.db, read_only=read_only)
                if user is None
                else AsyncUnitOfWork(self.db, read_only=read_only, user_id=user)
            )
            with contextlib.suppress(_StatusRollback):
                async with unit_of_work as unit:
                    yield unit
                    status = response.status_code
                    if status is not None and self.rollback_on(status):
                        raise _StatusRollback

        # The audit user comes from the app's own dependency (FastAPI caches it per
        # request, so a token parsed for auth is not parsed again).
        who = Depends(user_id) if user_id is not None else Depends(_anonymous)

        async def open_unit(
            response: Response, user: object = who
        ) -> AsyncIterator[AsyncUnitOfWork]:
            async with run_unit(response, user, read_only=False) as unit:
                yield unit

        async def open_read_only(
            response: Response, user: object = who
        ) -> AsyncIterator[AsyncUnitOfWork]:
            async with run_unit(response, user, read_only=True) as unit:
                yield unit

        # Public dependencies are plain functions over function-scoped generators: users
        # write Depends(deps.unit_of_work) and still get a unit closed before sending.
        session_scope = Depends(open_session, scope="function")
        unit_scope = Depends(open_unit, scope="function")
        read_only_scope = Depends(open_read_only, scope="function")

        async def session(opened: AsyncSession = session_scope) -> AsyncSession:
            return opened

        async def unit_of_work(opened: AsyncUnitOfWork = unit_scope) -> AsyncUnitOfWork:
            return opened

        async def read_only_unit(opened: AsyncUnitOfWork = read_only_scope) -> AsyncUnitOfWork:
            return opened

        self.session = session
        self.unit_of_work = unit_of_work
        self.read_only_unit = read_only_unit

    @property
    def db(self) -> AsyncDatabaseManager:
        """The manager the dependencies use now."""
        return self._db if self._db is not None else get_db_manager()

    def repository(
        self, model: type[M], *, read_only: bool = False, **options: Any
    ) -> Callable[..., Awaitable[Repository[M]]]:
        """A dependency giving ``Repository(model)`` bound to the request's unit of work.

        ``read_only=True`` binds it to the request's read-only unit instead (no write
        transaction: on SQLite no ``BEGIN IMMEDIATE``). ``options`` go to
        :meth:`AsyncUnitOfWork.get_repository` (``audit=``, ``cache=``)::

            Users = Annotated[Repository[User], Depends(deps.repository(User))]
            UsersRO = Annotated[Repository[User], Depends(deps.repository(User, read_only=True))]
        """
        request_unit = Depends(self.read_only_unit if read_only else self.unit_of_work)

        async def repository(unit: AsyncUnitOfWork = request_unit) -> Repository[M]:
            return unit.get_repository(model, **options)

        return repository

    def __repr__(self) -> str:
        db = "get_db_manager()" if self._db is None else self._db.url
        return f"<Dependencies db={db}>"


class AuditMiddleware:
    """Pure ASGI middleware: one :func:`~asyncdb.audit_context` per request.

    The correlation id is the request's ``X-Request-ID`` header when it looks like an id
    (letters, digits and ``._:/+=-``, at most 128 characters); otherwise a new UUID. It
    is echoed in the response's ``X-Request-ID`` header. ``user_id`` is a callable (sync
    or async) that receives the ``HTTPConnection`` (headers, cookies, ``state`` set by
    outer middleware) and returns the acting user's id, or None for anonymous::

        def user_id_from_token(conn: HTTPConnection) -> str | None:
            token = conn.headers.get("authorization")
            return decode(token).subject if token else None

        app.add_middleware(AuditMiddleware, user_id=user_id_from_token)

    It is not a ``BaseHTTPMiddleware``: that runs the app in another task, which breaks
    cancellation and hides context variables set by the app from the middleware.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        user_id: UserIdGetter | None = None,
        header: str = REQUEST_ID_HEADER,
    ) -> None:
        self.app = app
        self.user_id = user_id
        self.header = header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        connection: HTTPConnection = HTTPConnection(scope)
        request_id = _request_id(connection.headers.get(self.header))
        user = None
        if self.user_id is not None:
            user = self.user_id(connection)
            if inspect.isawaitable(user):
                user = await user

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[self.header] = request_id
            await send(message)

        async with audit_context(user_id=user, correlation_id=request_id):
            await self.app(scope, receive, send_with_id)


def _request_id(value: str | None) -> str:
    if value is not None and _REQUEST_ID.fullmatch(value):
        return value
    return str(uuid.uuid4())


def health_endpoint(
    db: AsyncDatabaseManager | None = None, *, timeout: float = 5.0
) -> Callable[[], Awaitable[JSONResponse]]:
    """An endpoint returning ``db.health_check(timeout)`` as JSON: 200, or 503 when unhealthy.

    ::

        app.add_api_route("/health", health_endpoint(db), methods=["GET"])

    ``db`` defaults to the process-wide manager (:func:`~asyncdb.get_db_manager`). The
    report holds the masked URL, pool figures and metrics (statement shapes, never
    parameter values): route it where only your infrastructure can reach it.
    """

    async def health() -> JSONResponse:
        manager = db if db is not None else get_db_manager()
        report = await manager.health_check(timeout=timeout)
        return JSONResponse(
            report.to_dict(),
            status_code=200 if report.healthy else 503,
            headers={"Cache-Control": "no-store"},
        )

    return health


# -- error mapping -----------------------------------------------------------------------

#: asyncdb error → HTTP status, most specific first (subclasses map as their base).
ERROR_STATUS: tuple[tuple[type[AsyncDBError], int], ...] = (
    (NotFoundError, 404),
    (ConflictError, 409),
    # A value the database rejected (too long, out of range): the client's to fix.
    (DataError, 422),
    (ValidationError, 422),
    (PoolTimeoutError, 503),
    # The connection broke mid-request (before any COMMIT): the work did not happen.
    (ConnectionLostError, 503),
    # Not 503: a retry could apply the work twice; the message says to check first.
    (CommitOutcomeUnknownError, 500),
    (DatabaseUnavailableError, 503),
    # Contention (deadlock, serialization failure, SQLite busy) after run_tx gave up.
    (RetryableError, 503),
    (AsyncDBError, 500),
)
#: Seconds a client should wait before retrying a 503.
RETRY_AFTER_SECONDS = 1


def error_response(exc: AsyncDBError) -> JSONResponse:
    """The JSON response for ``exc``: its status, a body ``{"error", "detail"}``.

    ``detail`` is the error's message (a sentence, never a bound value); a
    :class:`~asyncdb.ConflictError` adds ``"fields"``, the violated columns. A 503 carries
    ``Retry-After``. A 500 says what happened without guessing at the outcome.
    """
    status = next(code for kind, code in ERROR_STATUS if isinstance(exc, kind))
    body: dict[str, Any] = {"error": type(exc).__name__, "detail": str(exc)}
    if isinstance(exc, ConflictError):
        body["fields"] = list(exc.columns)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    return JSONResponse(body, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map asyncdb's errors to JSON responses, one call::

        app = FastAPI(lifespan=lifespan())
        install_error_handlers(app)

    ``NotFoundError`` → 404, ``ConflictError`` → 409 (with ``"fields"``),
    ``ValidationError`` and its subclasses (``DataError``: a value the database rejected)
    → 422, ``PoolTimeoutError``, ``ConnectionLostError``, ``DatabaseUnavailableError`` and
    ``RetryableError`` (contention, after ``run_tx`` gave up) → 503 with ``Retry-After``,
    a commit whose outcome is unknown (``CommitOutcomeUnknownError``) → 500 saying so,
    any other asyncdb error → 500.
    The request's unit of work has already rolled back when a handler runs. The handlers
    run inside ``AuditMiddleware``, so the response keeps its ``X-Request-ID``.
    Register your own handler for a class afterwards to override one mapping.
    """

    async def handle(request: Any, exc: Exception) -> Response:
        assert isinstance(exc, AsyncDBError)
        return error_response(exc)

    for kind, _ in ERROR_STATUS:
        app.add_exception_handler(kind, handle)
