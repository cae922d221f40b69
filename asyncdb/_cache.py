"""Repository cache (placeholder until the cache issue lands)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from ._manager import AsyncDatabaseManager
    from ._repository import Repository


class RepositoryCache(Protocol):
    """What the repository needs from a cache."""

    def attach(self, db: AsyncDatabaseManager) -> None: ...

    async def get_by_id(self, repo: Repository[Any], session: AsyncSession, ident: Any) -> Any: ...
