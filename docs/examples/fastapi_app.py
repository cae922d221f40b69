"""A complete FastAPI app on asyncdb: a to-do API with an audit trail.

* ``lifespan()`` connects the database at start-up (retrying while it boots) and
  disposes it at shutdown;
* each request gets one unit of work: it commits when the handler returns, and rolls
  back when the handler raises or answers with an error status;
* read-only routes use a read-only unit (no write transaction, no write lock on SQLite);
* ``install_error_handlers`` answers asyncdb's errors as JSON: 404, 409, 422, 503;
* ``AuditMiddleware`` tags every audit row with the request's ``X-Request-ID``, and the
  unit takes the acting user from the app's own ``current_user`` dependency;
* ``/health`` answers 200, or 503 when the database does not.

Run it with ``python docs/examples/fastapi_app.py`` or ``uvicorn fastapi_app:app`` from
this folder (uvicorn comes with the ``fastapi`` extra); ``ASYNCDB_URL`` picks the database.
Its tests, ``test_fastapi_app.py`` beside it, use asyncdb's pytest plugin.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from asyncdb import (
    AsyncUnitOfWork,
    Audited,
    Base,
    Repository,
    SoftDeleteMixin,
    TimestampMixin,
    get_audit_logs,
    get_db_manager,
    init_database,
)
from asyncdb.fastapi import (
    AuditMiddleware,
    Dependencies,
    health_endpoint,
    install_error_handlers,
    lifespan,
)

# -- model and schemas -------------------------------------------------------------------


class Todo(Base, TimestampMixin, SoftDeleteMixin, Audited):
    __tablename__ = "example_todo"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    done: Mapped[bool] = mapped_column(default=False)


class TodoIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)


class TodoOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    done: bool


# -- wiring ----------------------------------------------------------------------------


def current_user(x_user_id: Annotated[str | None, Header()] = None) -> str | None:
    """Who is acting. A real app decodes its auth token here; this one trusts a header.

    Routes that need the user depend on it too: FastAPI runs it once per request.
    """
    return x_user_id


# the process-wide manager (ASYNCDB_* settings), looked up per request
deps = Dependencies(user_id=current_user)
UnitOfWork = Annotated[AsyncUnitOfWork, Depends(deps.unit_of_work)]
Todos = Annotated[Repository[Todo], Depends(deps.repository(Todo))]
ReadTodos = Annotated[Repository[Todo], Depends(deps.repository(Todo, read_only=True))]


@contextlib.asynccontextmanager
async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with lifespan()(app):  # connect (with retry) ... dispose
        db = get_db_manager()
        await init_database(db)  # the toolkit's tables (the audit log), by migration
        async with db.engine.begin() as conn:  # the app's tables: use Alembic in real apps
            await conn.run_sync(Base.metadata.create_all)
        yield


app = FastAPI(title="To-do", lifespan=app_lifespan)
app.add_middleware(AuditMiddleware)
install_error_handlers(app)  # NotFoundError -> 404, ConflictError -> 409, ... as JSON
app.add_api_route("/health", health_endpoint(timeout=2.0), methods=["GET"])


# -- routes ------------------------------------------------------------------------------


@app.post("/todos", status_code=201)
async def create_todo(todo: TodoIn, todos: Todos) -> TodoOut:
    return TodoOut.model_validate(await todos.create(title=todo.title))


@app.get("/todos")
async def list_todos(todos: ReadTodos, done: bool | None = None) -> list[TodoOut]:
    filters = {} if done is None else {"done": done}
    return [TodoOut.model_validate(t) for t in await todos.find_by(order_by="id", **filters)]


@app.post("/todos/{todo_id}/done")
async def complete_todo(todo_id: int, todos: Todos) -> TodoOut:
    return TodoOut.model_validate(await todos.update(todo_id, done=True))


@app.post("/todos/import")
async def import_todos(titles: list[str], uow: UnitOfWork, response: Response) -> dict[str, int]:
    """All or nothing: a blank title answers 422, and the titles before it roll back too."""
    todos = uow.get_repository(Todo)
    for title in titles:
        if not title.strip():
            response.status_code = 422  # an error status rolls the unit back
            return {"imported": 0}
        await todos.create(title=title)
    return {"imported": len(titles)}


@app.get("/todos/{todo_id}")
async def get_todo(todo_id: int, todos: ReadTodos) -> TodoOut:
    return TodoOut.model_validate(await todos.get(todo_id))  # NotFoundError -> 404


@app.delete("/todos/{todo_id}", status_code=204)
async def delete_todo(todo_id: int, todos: Todos) -> None:
    if not await todos.exists(id=todo_id):
        raise HTTPException(status_code=404)
    await todos.delete(todo_id)  # soft delete: hidden from reads, kept for the audit


@app.get("/todos/{todo_id}/history")
async def history(todo_id: int) -> list[dict[str, Any]]:
    rows = await get_audit_logs(get_db_manager(), table_name="example_todo", entity_id=todo_id)
    return [
        {"action": r.action, "user": r.user_id, "request": r.correlation_id} for r in reversed(rows)
    ]


def main() -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)


if __name__ == "__main__":
    main()
