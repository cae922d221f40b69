"""The session classes asyncdb hands out: SQLAlchemy's, with errors translated."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ._errors import translate_errors

__all__ = ["ToolkitAsyncSession", "ToolkitSession"]


class ToolkitSession(Session):
    """The sync Session class behind every AsyncSession asyncdb hands out.

    A distinct class so that asyncdb's session events (audit, cache invalidation)
    apply to toolkit sessions only, never to an application's own sessions.
    """


class ToolkitAsyncSession(AsyncSession):
    """An ``AsyncSession`` whose I/O methods raise asyncdb errors.

    A pool timeout becomes :class:`~asyncdb.PoolTimeoutError`, a unique violation
    :class:`~asyncdb.ConflictError`, and so on; the SQLAlchemy error stays chained.
    """

    sync_session_class = ToolkitSession

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        with translate_errors():
            return await super().execute(*args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        with translate_errors():
            return await super().scalar(*args, **kwargs)

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        with translate_errors():
            return await super().scalars(*args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> Any:
        with translate_errors():
            return await super().get(*args, **kwargs)

    async def flush(self, objects: Any = None) -> None:
        with translate_errors():
            await super().flush(objects)

    async def commit(self) -> None:
        with translate_errors():
            await super().commit()

    async def refresh(self, *args: Any, **kwargs: Any) -> None:
        with translate_errors():
            await super().refresh(*args, **kwargs)

    async def connection(self, *args: Any, **kwargs: Any) -> Any:
        with translate_errors():
            return await super().connection(*args, **kwargs)
