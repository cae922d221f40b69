"""Writes by filter: ``update_by(values, **filters)`` and ``delete_by(**filters)``.

The filters are the readers' (columns, operators, relationships), checked the same way
before any SQL; the values are checked like :meth:`~asyncdb.Repository.update`'s. Each
call is all or nothing and returns how many rows it changed.

Without an audit trail the call is one ``UPDATE``/``DELETE ... WHERE ... RETURNING key``
statement. With one, the matching rows are first read (``FOR UPDATE`` where the backend
has it) for their old values, then changed by key — still under the filter, so a row
that stopped matching in between is left alone — and every changed row gets its own
audit row. Either way the keys changed are dropped from the session and logged for the
cache, which drops them (and the model's counts) at commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from ._audit import audit_row, entity_id_of, write_audit_rows
from ._audit_model import AuditAction
from ._bulk import as_attrs, chunks, written
from ._context import AuditContext
from ._errors import ValidationError
from ._expressions import Where
from ._filters import check_flag
from ._model_info import ModelInfo
from ._models import utcnow
from ._repository_base import RepositoryCore

__all__ = ["FilterWrites"]

T = TypeVar("T")

#: Keys per ``WHERE key IN (...)`` when changing audited rows (below every backend's
#: limit on bound parameters).
_KEYS_PER_STATEMENT = 5_000


class FilterWrites(RepositoryCore[T]):
    """``update_by`` and ``delete_by`` (mixed into :class:`~asyncdb.Repository`)."""

    async def update_by(
        self,
        values: Mapping[str, Any],
        /,
        *,
        allow_all: bool = False,
        where: Where = None,
        **filters: Any,
    ) -> int:
        """Set ``values`` on every live row matching ``filters``; returns how many.

        ``await articles.update_by({"status": "archived"}, created_at__lt=cutoff)``.
        Soft-deleted rows are never changed. No filter at all is a
        :class:`ValidationError` unless ``allow_all=True`` says every row is meant.
        """
        if not isinstance(values, Mapping):
            msg = f"update_by() takes the new values as a mapping (got {type(values).__name__})."
            raise ValidationError(msg)
        self._check_by_filter_values(values)
        checked = self._check_update(values)
        if not checked:
            msg = "update_by() needs at least one value to set."
            raise ValidationError(msg)
        conditions = self._filter_where("update_by", allow_all, filters, False, where)
        if self._info.has_updated_at and "updated_at" not in checked:
            checked["updated_at"] = utcnow()
        return await self._change_where(conditions, checked, stamped="updated_at" in values)

    async def delete_by(
        self,
        *,
        soft: bool | None = None,
        with_deleted: bool = False,
        allow_all: bool = False,
        where: Where = None,
        **filters: Any,
    ) -> int:
        """Delete every row matching ``filters`` (soft by default when the model can).

        Returns how many rows were deleted. A soft delete skips rows already deleted;
        a hard one (``soft=False``) removes live rows, and soft-deleted ones too with
        ``with_deleted=True``. No filter at all is a :class:`ValidationError` unless
        ``allow_all=True``.
        """
        soft_delete = self._resolve_soft(soft)
        conditions = self._filter_where("delete_by", allow_all, filters, with_deleted, where)
        if soft_delete:
            now = utcnow()
            values: dict[str, Any] = {"deleted_at": now}
            if self._info.has_updated_at:
                values["updated_at"] = now
            conditions.append(self.model.deleted_at.is_(None))  # type: ignore[attr-defined]
            return await self._change_where(conditions, values, stamped=False, soft_delete=True)
        return await self._change_where(conditions, None, stamped=False)

    def _check_by_filter_values(self, values: Mapping[str, Any]) -> None:
        """Keys and the soft-delete column are not update_by()'s to change."""
        for name in values:
            if name in self._info.pk_names:
                msg = (
                    f"update_by() cannot change the primary key {name!r} of "
                    f"{self.model.__name__}: filter by it instead (update_by(values, "
                    f"{name}=...)); to change a key, create a new row and delete the old one."
                )
                raise ValidationError(msg)
            if self._soft and name == "deleted_at":
                msg = (
                    "update_by() does not set deleted_at: use delete_by(...) to soft-delete "
                    "rows (audited as deletes), and restore(id) to bring one back."
                )
                raise ValidationError(msg)

    def _filter_where(
        self,
        what: str,
        allow_all: bool,
        filters: Mapping[str, Any],
        with_deleted: bool,
        where: Where,
    ) -> list[ColumnElement[bool]]:
        check_flag("allow_all", allow_all)
        no_where = where is None or (isinstance(where, (list, tuple)) and not where)
        if not filters and no_where and not allow_all:
            msg = (
                f"{what}() without a filter would change every {self.model.__name__} row. "
                "Pass filters, or allow_all=True if every row is meant."
            )
            raise ValidationError(msg)
        conditions: list[ColumnElement[bool]] = self._where(filters, with_deleted, where)
        return conditions

    async def _change_where(
        self,
        where: list[ColumnElement[bool]],
        values: dict[str, Any] | None,
        *,
        stamped: bool,
        soft_delete: bool = False,
    ) -> int:
        info = self._info

        async def op(session: AsyncSession) -> int:
            context = self._audit_context(session)
            if context is None:
                keys = await _execute(info, session, where, values, None)
            else:
                async with self._atomic(session):
                    keys = await _audited(
                        info, session, where, values, context, stamped, soft_delete
                    )
            written(info, session, keys)
            return len(keys)

        if not self._audited:
            return await self._write_one_statement(op)
        return await self._write(op)


def _statement(
    info: ModelInfo,
    where: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any] | None,
    *,
    returning: bool = True,
) -> Any:
    """``UPDATE ... SET values`` (or ``DELETE``) ``WHERE ... RETURNING key``."""
    table = info.table
    if values is None:
        stmt: Any = delete(table)
    else:
        stmt = update(table).values({info.attr_to_column[k].key: v for k, v in values.items()})
    stmt = stmt.where(*where)
    return stmt.returning(*info.pk_columns) if returning else stmt


async def _execute(
    info: ModelInfo,
    session: AsyncSession,
    where: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any] | None,
    keys: Sequence[tuple[Any, ...]] | None,
) -> list[tuple[Any, ...]]:
    """Run the change (restricted to ``keys`` when given); the keys it changed."""
    conditions = list(where)
    if keys is not None:
        if len(info.pk_columns) == 1:
            conditions.append(info.pk_columns[0].in_([k[0] for k in keys]))
        else:
            conditions.append(tuple_(*info.pk_columns).in_(keys))
    if values is not None and not session.get_bind().dialect.update_returning:
        # MariaDB/MySQL: no UPDATE ... RETURNING. Lock and read the matching keys, then
        # update by key (which also keeps a subquery on the same table out of the UPDATE).
        found = select(*info.pk_columns).where(*conditions).with_for_update()
        matched = [tuple(row) for row in (await session.execute(found)).all()]
        if matched:
            by_key = _statement(info, [_key_in(info, matched)], values, returning=False)
            await session.execute(by_key)
        return matched
    result = await session.execute(_statement(info, conditions, values))
    return [tuple(row) for row in result.all()]


def _key_in(info: ModelInfo, keys: Sequence[tuple[Any, ...]]) -> ColumnElement[bool]:
    if len(info.pk_columns) == 1:
        return info.pk_columns[0].in_([k[0] for k in keys])
    return tuple_(*info.pk_columns).in_(keys)


async def _audited(
    info: ModelInfo,
    session: AsyncSession,
    where: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any] | None,
    context: AuditContext,
    stamped: bool,
    soft_delete: bool,
) -> list[tuple[Any, ...]]:
    """Read the matching rows' old values, change them by key, one audit row each."""
    query = select(*info.table.c).where(*where).with_for_update()
    old_rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in (await session.execute(query)).mappings():
        attrs = as_attrs(info, row)
        old_rows[tuple(attrs[name] for name in info.pk_names)] = attrs
    done: list[tuple[Any, ...]] = []
    for batch in chunks(list(old_rows), _KEYS_PER_STATEMENT):
        done.extend(await _execute(info, session, where, values, batch))
    audit = []
    for key in done:
        old = old_rows[key]
        if values is None:
            audit.append(
                audit_row(info.model, AuditAction.BULK_DELETE, entity_id_of(key), context, old=old)
            )
            continue
        # The automatic updated_at stamp is not a change the caller made.
        changed = {
            k: v for k, v in values.items() if old.get(k) != v and (k != "updated_at" or stamped)
        }
        if not changed:
            continue
        action = AuditAction.BULK_DELETE if soft_delete else AuditAction.BULK_UPDATE
        audit.append(
            audit_row(
                info.model,
                action,
                entity_id_of(key),
                context,
                old={k: old.get(k) for k in changed},
                new=changed,
                changed=changed,
            )
        )
    await session.run_sync(write_audit_rows, audit)
    return done
