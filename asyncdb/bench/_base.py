"""What every bench stack shares: the target it connects to and the Stack interface."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any

from ._schema import BenchSchema

__all__ = ["POOL_SIZE", "Stack", "Target"]

#: Connections in every stack's pool (no overflow): the concurrent workload's "pool of 10".
POOL_SIZE = 10
#: The cursor of a descending walk's first page on the stacks whose cursor is the id.
TOP_ID = 2**31 - 1
#: SQLite busy timeout of the plain stacks, as asyncdb's default.
_BUSY_TIMEOUT_MS = 5000


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the stacks connect and what they work on."""

    url: str
    backend: str
    schema: BenchSchema
    cache_entries: int = 10_000


class Stack(abc.ABC):
    """One way of talking to the database. ``Any`` results: the bench only counts them."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.read_table = target.schema.read_model.__table__
        self.write_table = target.schema.write_model.__table__

    @abc.abstractmethod
    async def open(self) -> None:
        """Create the pool (connections open lazily)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection; safe to call after a failed :meth:`open`."""

    async def warm(self, ids: Sequence[int]) -> None:  # noqa: B027 - an optional hook
        """Bring the stack to its steady state for reads of ``ids`` (a cache fills up)."""

    @abc.abstractmethod
    async def create(self, values: dict[str, Any]) -> Any:
        """Insert one row into the insert table; return its id."""

    @abc.abstractmethod
    async def get_by_id(self, ident: int) -> Any:
        """Read one row of the read table by primary key."""

    @abc.abstractmethod
    async def update(self, ident: int, values: dict[str, Any]) -> Any:
        """Change one row of the read table and return it."""

    @abc.abstractmethod
    async def paginate(self, page: int, page_size: int) -> Any:
        """One offset page by id with the total count, as ``(total, rows)``."""

    @abc.abstractmethod
    async def bulk_create(self, rows: list[dict[str, Any]]) -> Any:
        """Insert ``rows`` into the insert table in one transaction."""

    async def bulk_upsert(self, rows: list[dict[str, Any]]) -> Any:
        """Insert or update ``rows`` (each with its ``id``) in the insert table, in one
        transaction; only the stacks of the ``bulk_upsert`` workload have it."""
        raise NotImplementedError

    async def list_page(self, reader: int, offset: int) -> Any:
        """A page of articles with their relations for ``reader``: ``(total, views)``."""
        raise NotImplementedError

    @abc.abstractmethod
    async def keyset_page(
        self, after: Any, limit: int, descending: bool = False
    ) -> tuple[int, Any]:
        """The page after the cursor ``after`` (None: the first); ``(rows, next or None)``.

        By ``id``, newest first when ``descending``.
        """


# -- SQLAlchemy, without asyncdb ---------------------------------------------------------
