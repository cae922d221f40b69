"""Reads that count: ``paginate_offset`` (limit/offset with the total) and ``count_by``.

Mixed into :class:`~asyncdb.Repository`; the filters, ``where=``, ``load=`` and
``annotate=`` arguments mean what they mean on :meth:`~asyncdb.Repository.find_by`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ._aggregates import Annotate
from ._errors import ValidationError
from ._expressions import Where
from ._filters import as_int, check_filterable
from ._loading import LoadArg
from ._offset_page import OffsetPage
from ._repository_base import DEFAULT_PAGE_SIZE, RepositoryCore

__all__ = ["CountingReads"]

T = TypeVar("T")

#: Most groups count_by returns; more is a ValidationError (group by a coarser column).
MAX_GROUPS = 10_000


class CountingReads(RepositoryCore[T]):
    """``paginate_offset`` and ``count_by`` (mixed into :class:`~asyncdb.Repository`)."""

    async def paginate_offset(
        self,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        offset: int = 0,
        order_by: str | Sequence[str] | None = None,
        with_deleted: bool = False,
        load: LoadArg = None,
        where: Where = None,
        annotate: Annotate = None,
        **filters: Any,
    ) -> OffsetPage[T]:
        """``limit`` rows from ``offset`` on, with the total: ``?limit=20&offset=3``.

        ``limit`` is capped by ``max_page_size`` like ``page_size``; the order always
        ends in the primary key, so slices neither skip nor repeat rows. Both take an
        int or its digits from a query string (``"20"``); ``"-1"`` or ``"abc"`` is a
        :class:`ValidationError`.
        """
        limit = as_int("limit", limit, 1, self.max_page_size)
        offset = as_int("offset", offset, 0)
        conditions = self._where(filters, with_deleted, where)
        count_stmt = select(func.count()).select_from(self.model).where(*conditions)
        stmt = self._ordered(self._select(annotate).where(*conditions), order_by)
        stmt = self._with_load(stmt.limit(limit).offset(offset), load, with_deleted)

        async def op(session: AsyncSession) -> OffsetPage[T]:
            total = int((await session.execute(count_stmt)).scalar_one())
            items = await self._fetch(session, stmt, annotate) if total > offset else []
            return OffsetPage(items=items, total=total, limit=limit, offset=offset)

        return await self._read(op)

    async def count_by(
        self,
        field: str,
        *,
        with_deleted: bool = False,
        where: Where = None,
        **filters: Any,
    ) -> dict[Any, int]:
        """How many matching rows hold each value of ``field``: ``{"draft": 3, ...}``.

        ``field`` must be filterable (secret columns never are). Values with no row
        are absent; NULL is the key None. Not cached.
        """
        check_filterable(self.model, field, self.filterable, what="count_by field")
        column = getattr(self.model, field)
        stmt = (
            select(column, func.count())
            .select_from(self.model)
            .where(*self._where(filters, with_deleted, where))
            .group_by(column)
            .limit(MAX_GROUPS + 1)
        )

        async def op(session: AsyncSession) -> dict[Any, int]:
            rows = (await session.execute(stmt)).all()
            if len(rows) > MAX_GROUPS:
                msg = (
                    f"count_by({field!r}) found more than {MAX_GROUPS} distinct values; "
                    "group by a column with fewer values, or filter first."
                )
                raise ValidationError(msg)
            return {value: int(n) for value, n in rows}

        return await self._read(op)
