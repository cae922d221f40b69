"""Bulk writes and upsert of :class:`~asyncdb.Repository`: many rows per statement.

Each method checks its input, then runs the matching function of ``_bulk`` or
``_upsert`` all or nothing (a SAVEPOINT in a caller's transaction; a standalone call's
transaction is its own), so a bad row fails the whole call and leaves the data as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from . import _bulk, _upsert
from ._repository_base import DEFAULT_BATCH_SIZE, RepositoryCore

__all__ = ["BulkWrites"]

T = TypeVar("T")


class BulkWrites(RepositoryCore[T]):
    """``bulk_create``, ``bulk_update``, ``bulk_delete``, ``upsert``, ``bulk_upsert``."""

    async def bulk_create(
        self, rows: Iterable[Mapping[str, Any] | T], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> int:
        """Insert many rows in batches, all or nothing; returns how many were inserted.

        ``rows`` may be any iterable (a generator streams: only one batch is held at a
        time). A bad row fails the whole call with an error naming its position.
        """
        self._check_batch(batch_size)

        async def op(session: AsyncSession, own: bool) -> int:
            context = self._audit_context(session)
            return await _bulk.insert_rows(self._info, session, rows, batch_size, context, own)

        return await self._write_atomic(op)

    async def bulk_update(
        self, rows: Iterable[Mapping[str, Any]], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> int:
        """Update many rows, each a mapping holding its primary key; all or nothing.

        A row whose id does not exist (or is soft-deleted) fails the call with
        :class:`NotFoundError`. Returns how many rows were updated.
        """
        self._check_batch(batch_size)

        async def op(session: AsyncSession, own: bool) -> int:
            return await _bulk.update_rows(
                self._info, session, rows, batch_size, self._audit_context(session)
            )

        return await self._write_atomic(op)

    async def bulk_delete(
        self, ids: Iterable[Any], *, soft: bool | None = None, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> int:
        """Delete many rows by id (soft by default when the model can); returns the count.

        Ids that do not exist (or are already soft-deleted, for a soft delete) are skipped.
        """
        self._check_batch(batch_size)
        soft_delete = self._resolve_soft(soft)
        idents = [self._coerce_id(i) for i in ids]

        async def op(session: AsyncSession, own: bool) -> int:
            return await _bulk.delete_rows(
                self._info,
                session,
                idents,
                soft_delete,
                batch_size,
                self._audit_context(session),
            )

        return await self._write_atomic(op)

    async def upsert(self, values: Mapping[str, Any], *, conflict_on: Sequence[str]) -> T:
        """Insert ``values``, or update the row that has the same ``conflict_on`` values.

        Uses the backend's native ``INSERT ... ON CONFLICT DO UPDATE``; the columns in
        ``conflict_on`` must form the primary key or a unique constraint.
        """
        values = self._check_values(values)
        conflict = _upsert.check_conflict_target(self._info, conflict_on, values)

        async def op(session: AsyncSession) -> T:
            obj: T = await _upsert.upsert_one(
                self._info, session, dict(values), conflict, self._audit_context(session)
            )
            return obj

        return await self._write(op)

    async def bulk_upsert(
        self,
        rows: Iterable[Mapping[str, Any]],
        *,
        conflict_on: Sequence[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> int:
        """Upsert many rows in batches, all or nothing; returns how many were written."""
        self._check_batch(batch_size)
        conflict = _upsert.check_conflict_target(self._info, conflict_on, None)

        async def op(session: AsyncSession, own: bool) -> int:
            return await _upsert.upsert_rows(
                self._info,
                session,
                rows,
                conflict,
                batch_size,
                self._audit_context(session),
            )

        return await self._write_atomic(op)
