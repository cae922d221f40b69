"""The repository's bulk and upsert operations: Core DML in batches, near driver speed.

Each batch runs inside its own SAVEPOINT, so when the database rejects a batch the
failing row can be found (by replaying the batch one row at a time, then undoing
that) and named in the error; the repository wraps the whole call in one more
SAVEPOINT, so nothing of a failed call is written.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Column, Table, bindparam, delete, insert, select, tuple_, update
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ._audit import audit_row, entity_id_of, resolve_context, write_audit_rows
from ._audit_model import AuditAction
from ._capabilities import supports
from ._errors import AsyncDBError, ConflictError, NotFoundError, ValidationError
from ._models import utcnow

if TYPE_CHECKING:
    from ._repository import Repository

__all__ = [
    "check_conflict_target",
    "delete_rows",
    "insert_rows",
    "update_rows",
    "upsert_one",
    "upsert_rows",
]

T = TypeVar("T")
# Largest number of rows replayed one by one to find the one the database rejected.
_DIAGNOSE_LIMIT = 10_000


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _table(repo: Repository[Any]) -> Table:
    return repo.table


def _attr_to_column(repo: Repository[Any]) -> dict[str, Column[Any]]:
    """Attribute key → column; computed once per repository (bulk calls ask per row)."""
    mapping: dict[str, Column[Any]] | None = getattr(repo, "_attr_columns", None)
    if mapping is None:
        mapping = {prop.key: prop.columns[0] for prop in repo._mapper.column_attrs}  # type: ignore[misc]
        repo._attr_columns = mapping
        repo._names_are_columns = all(key == col.key for key, col in mapping.items())
    return mapping


def _python_default(column: Column[Any]) -> tuple[bool, Any]:
    default = column.default
    if default is None or getattr(default, "is_sequence", False):
        return False, None
    if getattr(default, "is_scalar", False):
        return True, default.arg  # type: ignore[attr-defined]
    if getattr(default, "is_callable", False):
        try:
            return True, default.arg(None)  # type: ignore[attr-defined]
        except TypeError:
            return False, None  # needs an execution context: let SQLAlchemy fill it in
    return False, None


def _row_values(repo: Repository[Any], row: Any, index: int) -> dict[str, Any]:
    if isinstance(row, repo.model):
        state_dict = row.__dict__
        return {k: state_dict[k] for k in repo._columns if k in state_dict}
    if not isinstance(row, Mapping):
        msg = (
            f"Row {index}: expected a mapping of field names to values or a "
            f"{repo.model.__name__} (got {type(row).__name__})."
        )
        raise ValidationError(msg)
    if not repo._columns.issuperset(row):
        unknown = [k for k in row if k not in repo._columns]
        msg = (
            f"Row {index}: unknown field {unknown[0]!r} for {repo.model.__name__}. "
            f"Use one of: {', '.join(sorted(repo._columns))}."
        )
        raise ValidationError(msg)
    return dict(row)


def _defaulted(repo: Repository[Any]) -> list[tuple[str, Column[Any]]]:
    """The columns that have a Python-side default; computed once per repository."""
    found: list[tuple[str, Column[Any]]] | None = getattr(repo, "_defaulted_columns", None)
    if found is None:
        found = [
            (key, col)
            for key, col in _attr_to_column(repo).items()
            if col.default is not None and not getattr(col.default, "is_sequence", False)
        ]
        repo._defaulted_columns = found
    return found


def _with_defaults(repo: Repository[Any], values: dict[str, Any]) -> dict[str, Any]:
    """Fill Python-side column defaults, so every row of a batch has the same keys and
    the audit log sees the values that were really written."""
    for key, column in _defaulted(repo):
        if key not in values:
            has, value = _python_default(column)
            if has:
                values[key] = value
    return values


def _to_columns(repo: Repository[Any], values: Mapping[str, Any]) -> dict[str, Any]:
    mapping = _attr_to_column(repo)
    if repo._names_are_columns:
        return values if isinstance(values, dict) else dict(values)
    return {mapping[k].key: v for k, v in values.items()}


def _relabel(exc: AsyncDBError, row: int) -> AsyncDBError:
    message = f"Row {row}: {exc}"
    if isinstance(exc, ConflictError):
        return ConflictError(message, sqlstate=exc.sqlstate, constraint=exc.constraint)
    return type(exc)(message, sqlstate=exc.sqlstate)


async def _execute_batch(
    session: AsyncSession, stmt: Any, params: list[dict[str, Any]], first_row: int
) -> Any:
    """Run one executemany batch in a SAVEPOINT; on failure, name the row that failed."""
    if not supports(session.get_bind().dialect.name, "savepoint"):
        # DuckDB: no savepoint to retry the rows one by one; the batch fails as a whole.
        try:
            return await session.execute(stmt, params)
        except AsyncDBError as exc:
            msg = f"Rows {first_row}-{first_row + len(params) - 1}: {exc}"
            raise type(exc)(msg, sqlstate=exc.sqlstate) from exc
    try:
        async with session.begin_nested():
            return await session.execute(stmt, params)
    except AsyncDBError as exc:
        bad = await _find_bad_row(session, stmt, params)
        if bad is None:
            msg = f"Rows {first_row}-{first_row + len(params) - 1}: {exc}"
            raise type(exc)(msg, sqlstate=exc.sqlstate) from exc
        raise _relabel(exc, first_row + bad) from exc


async def _find_bad_row(
    session: AsyncSession, stmt: Any, params: list[dict[str, Any]]
) -> int | None:
    probe = await session.begin_nested()
    try:
        for i, param in enumerate(params[:_DIAGNOSE_LIMIT]):
            try:
                async with session.begin_nested():
                    await session.execute(stmt, [param])
            except AsyncDBError:
                return i
        return None
    finally:
        await probe.rollback()


def _group_by_keys(
    params: list[tuple[int, dict[str, Any]]],
) -> list[list[tuple[int, dict[str, Any]]]]:
    groups: dict[frozenset[str], list[tuple[int, dict[str, Any]]]] = {}
    for item in params:
        groups.setdefault(frozenset(item[1]), []).append(item)
    return list(groups.values())


def _pk_in(repo: Repository[Any], keys: Sequence[tuple[Any, ...]]) -> Any:
    if len(repo._pk_cols) == 1:
        return repo._pk_cols[0].in_([k[0] for k in keys])
    return tuple_(*repo._pk_cols).in_(keys)


def _evict(repo: Repository[Any], session: AsyncSession, keys: Iterable[tuple[Any, ...]]) -> None:
    """Drop stale copies of rows changed by Core DML from the session's identity map."""
    sync = session.sync_session
    for key in keys:
        obj = sync.identity_map.get(sync.identity_key(repo.model, key))
        if obj is not None:
            sync.expunge(obj)


def _written(repo: Repository[Any], session: AsyncSession, keys: list[tuple[Any, ...]]) -> None:
    """Rows changed by Core DML: drop their stale ORM copies and log them for the cache."""
    _evict(repo, session, keys)
    repo._changed(session, keys)


def _as_attrs(repo: Repository[Any], row: Mapping[Any, Any]) -> dict[str, Any]:
    """A row read by column name, keyed by the model's attribute names."""
    by_column: dict[str, str] | None = getattr(repo, "_column_to_attr", None)
    if by_column is None:
        by_column = {col.key: prop for prop, col in _attr_to_column(repo).items()}
        repo._column_to_attr = by_column
    return {by_column[k]: v for k, v in row.items()}


def _upsert_audit(
    repo: Repository[Any],
    key: tuple[Any, ...],
    context: Any,
    old: Mapping[str, Any] | None,
    new: dict[str, Any],
) -> dict[str, Any]:
    """The UPSERT audit row: all values for an insert, only what changed for an update."""
    if old is not None:
        new = {k: v for k, v in new.items() if old.get(k) != v}
        old = {k: old.get(k) for k in new}
    return audit_row(
        repo.model, AuditAction.UPSERT, entity_id_of(key), context, old=old, new=new, changed=new
    )


def _key(repo: Repository[Any], values: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(values.get(name) for name in repo._pk_names)


# -- insert ------------------------------------------------------------------------------


async def insert_rows(
    repo: Repository[Any], session: AsyncSession, rows: Iterable[Any], batch_size: int
) -> int:
    """bulk_create: executemany INSERT per batch (multi-VALUES on both backends)."""
    table = _table(repo)
    total = 0
    context = resolve_context(session.sync_session, repo._defaults) if repo._audited else None
    for batch_no, batch in enumerate(_chunks(rows, batch_size)):
        first = batch_no * batch_size
        prepared = [
            (first + i, _with_defaults(repo, _row_values(repo, row, first + i)))
            for i, row in enumerate(batch)
        ]
        for group in _group_by_keys(prepared):
            params = [_to_columns(repo, values) for _, values in group]
            if context is None:
                await _execute_batch(session, insert(table), params, group[0][0])
                keys: list[tuple[Any, ...]] | None = None
            else:
                stmt = insert(table).returning(*repo._pk_cols, sort_by_parameter_order=True)
                result = await _execute_batch(session, stmt, params, group[0][0])
                keys = [tuple(r) for r in result.all()]
                audit = [
                    audit_row(
                        repo.model,
                        AuditAction.BULK_CREATE,
                        entity_id_of(key),
                        context,
                        new={**values, **dict(zip(repo._pk_names, key, strict=False))},
                        changed=values,
                    )
                    for key, (_, values) in zip(keys, group, strict=False)
                ]
                await session.run_sync(write_audit_rows, audit)
            total += len(group)
            repo._changed(session, keys)
    return total


# -- update ------------------------------------------------------------------------------


async def update_rows(
    repo: Repository[Any], session: AsyncSession, rows: Iterable[Any], batch_size: int
) -> int:
    """bulk_update: check the ids exist, then executemany UPDATE ... WHERE pk = ?"""
    table = _table(repo)
    columns = _attr_to_column(repo)
    stamp = "updated_at" in repo._columns
    context = resolve_context(session.sync_session, repo._defaults) if repo._audited else None
    total = 0
    stamped_by_caller: set[str] = set()
    for batch_no, batch in enumerate(_chunks(rows, batch_size)):
        first = batch_no * batch_size
        prepared: list[tuple[int, tuple[Any, ...], dict[str, Any]]] = []
        for i, row in enumerate(batch):
            values = _row_values(repo, row, first + i)
            key = _key(repo, values)
            if any(v is None for v in key):
                msg = (
                    f"Row {first + i}: each row of bulk_update needs its primary key "
                    f"{repo._pk_names}."
                )
                raise ValidationError(msg)
            changes = {k: v for k, v in values.items() if k not in repo._pk_names}
            if "updated_at" in changes:
                stamped_by_caller.add("updated_at")
            if stamp and "updated_at" not in changes:
                changes["updated_at"] = utcnow()
            prepared.append((first + i, key, changes))
        keys = [key for _, key, _ in prepared]
        existing = await _load_existing(repo, session, keys, context is not None)
        for index, key, _ in prepared:
            if key not in existing:
                msg = (
                    f"Row {index}: no {repo.model.__name__} with id "
                    f"{key[0] if len(key) == 1 else key!r}. "
                    "Nothing was updated."
                )
                raise NotFoundError(msg)
        groups: dict[frozenset[str], list[tuple[int, tuple[Any, ...], dict[str, Any]]]] = {}
        for item in prepared:
            groups.setdefault(frozenset(item[2]), []).append(item)
        for names, group in groups.items():
            if not names:
                continue
            where = [col == bindparam(f"_pk_{i}") for i, col in enumerate(repo._pk_cols)]
            stmt = (
                update(table)
                .where(*where)
                .values({columns[n].key: bindparam(f"_v_{n}") for n in names})
            )
            params = [
                {
                    **{f"_pk_{i}": v for i, v in enumerate(key)},
                    **{f"_v_{n}": changes[n] for n in names},
                }
                for _, key, changes in group
            ]
            await _execute_batch(session, stmt, params, group[0][0])
        if context is not None:
            audit = []
            for _, key, changes in prepared:
                old_row = existing[key]
                # The automatic updated_at stamp is not a change the caller made (the
                # single-row path does not log it either).
                changed = {
                    k: v
                    for k, v in changes.items()
                    if old_row.get(k) != v and (k != "updated_at" or k in stamped_by_caller)
                }
                if changed:
                    old = {k: old_row.get(k) for k in changed}
                    audit.append(
                        audit_row(
                            repo.model,
                            AuditAction.BULK_UPDATE,
                            entity_id_of(key),
                            context,
                            old=old,
                            new=changed,
                            changed=changed,
                        )
                    )
            await session.run_sync(write_audit_rows, audit)
        _written(repo, session, keys)
        total += len(prepared)
    return total


async def _load_existing(
    repo: Repository[Any], session: AsyncSession, keys: Sequence[tuple[Any, ...]], full: bool
) -> dict[tuple[Any, ...], dict[str, Any]]:
    table = _table(repo)
    cols = list(table.c) if full else list(repo._pk_cols)
    stmt = select(*cols).where(_pk_in(repo, keys))
    if repo._soft:
        stmt = stmt.where(table.c.deleted_at.is_(None))
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in (await session.execute(stmt)).mappings():
        values = _as_attrs(repo, row)
        found[_key(repo, values)] = values
    return found


# -- delete ------------------------------------------------------------------------------


async def delete_rows(
    repo: Repository[Any], session: AsyncSession, idents: Sequence[Any], soft: bool, batch_size: int
) -> int:
    """bulk_delete: one UPDATE (soft) or DELETE (hard) ... WHERE pk IN (...) per batch."""
    table = _table(repo)
    context = resolve_context(session.sync_session, repo._defaults) if repo._audited else None
    total = 0
    for batch in _chunks(idents, batch_size):
        keys = [repo._pk_tuple(i) for i in batch]
        old_rows = await _load_existing(repo, session, keys, True) if context is not None else {}
        now = utcnow()
        if soft:
            values: dict[str, Any] = {"deleted_at": now}
            if "updated_at" in repo._columns:
                values["updated_at"] = now
            plain: Any = (
                update(table).where(_pk_in(repo, keys), table.c.deleted_at.is_(None)).values(values)
            )
            stmt: Any = plain.returning(*repo._pk_cols)
        else:
            stmt = delete(table).where(_pk_in(repo, keys)).returning(*repo._pk_cols)
        if soft and not session.get_bind().dialect.update_returning:
            # MariaDB/MySQL: no UPDATE ... RETURNING; read the keys the UPDATE will change.
            live = select(*repo._pk_cols).where(_pk_in(repo, keys), table.c.deleted_at.is_(None))
            done = [tuple(r) for r in (await session.execute(live.with_for_update())).all()]
            await session.execute(plain)
        else:
            done = [tuple(r) for r in (await session.execute(stmt)).all()]
        if context is not None:
            audit = []
            for key in done:
                old = old_rows.get(key)
                if soft:
                    audit.append(
                        audit_row(
                            repo.model,
                            AuditAction.BULK_DELETE,
                            entity_id_of(key),
                            context,
                            old={"deleted_at": None},
                            new={"deleted_at": now},
                            changed=["deleted_at"],
                        )
                    )
                else:
                    audit.append(
                        audit_row(
                            repo.model,
                            AuditAction.BULK_DELETE,
                            entity_id_of(key),
                            context,
                            old=old or {},
                        )
                    )
            await session.run_sync(write_audit_rows, audit)
        _written(repo, session, done)
        total += len(done)
    return total


# -- upsert ------------------------------------------------------------------------------


def check_conflict_target(
    repo: Repository[Any], conflict_on: Sequence[str], values: Mapping[str, Any] | None
) -> list[str]:
    """``conflict_on`` must name the primary key or a unique constraint or index."""
    if isinstance(conflict_on, str) or not conflict_on:
        msg = "conflict_on must be a non-empty list of column names, e.g. conflict_on=['email']."
        raise ValidationError(msg)
    names = list(conflict_on)
    from ._filters import check_columns

    check_columns(repo.model, names, what="conflict_on column")
    columns = _attr_to_column(repo)
    wanted = {columns[n].key for n in names}
    table = _table(repo)
    unique_sets = [{c.key for c in table.primary_key.columns}]
    for constraint in table.constraints:
        if type(constraint).__name__ == "UniqueConstraint":
            unique_sets.append({c.key for c in constraint.columns})  # type: ignore[attr-defined]
    for index in table.indexes:
        if index.unique:
            unique_sets.append({c.key for c in index.columns})
    unique_sets.extend({c.key} for c in table.columns if c.unique)
    if wanted not in unique_sets:
        msg = (
            f"conflict_on={names} is neither the primary key nor a unique constraint of "
            f"{repo.model.__name__}. Name the columns of one of its unique constraints."
        )
        raise ValidationError(msg)
    if values is not None:
        missing = [n for n in names if n not in values]
        if missing:
            msg = f"upsert values must include the conflict_on column(s) {missing}."
            raise ValidationError(msg)
    return names


def _dialect_insert(session: AsyncSession, target: Any) -> Any:
    name = session.get_bind().dialect.name
    if name in ("postgresql", "duckdb"):  # DuckDB speaks PostgreSQL's ON CONFLICT
        return postgresql.insert(target)
    if name in ("mysql", "mariadb"):
        return mysql.insert(target)
    return sqlite.insert(target)


def _set_clause(
    repo: Repository[Any], ins: Any, keys: Iterable[str], conflict: Sequence[str]
) -> dict[str, Any]:
    columns = _attr_to_column(repo)
    skip = set(conflict) | set(repo._pk_names) | {"created_at"}
    # ON CONFLICT's EXCLUDED row; MySQL's ON DUPLICATE KEY UPDATE calls it "inserted".
    excluded = ins.excluded if hasattr(ins, "excluded") else ins.inserted
    set_ = {columns[k].key: excluded[columns[k].key] for k in keys if k not in skip}
    if "updated_at" in repo._columns:
        set_[columns["updated_at"].key] = excluded[columns["updated_at"].key]
    if repo._soft and "deleted_at" not in set_:
        set_[columns["deleted_at"].key] = None  # an upsert brings a soft-deleted row back
    if not set_:
        # A no-op update, so that RETURNING still yields the existing row.
        first = columns[conflict[0]].key
        set_[first] = excluded[first]
    return set_


async def upsert_one(
    repo: Repository[T], session: AsyncSession, values: dict[str, Any], conflict: Sequence[str]
) -> T:
    """upsert: INSERT ... ON CONFLICT (conflict) DO UPDATE ... RETURNING the row."""
    values = _with_defaults(repo, values)
    if "updated_at" in repo._columns:
        values["updated_at"] = utcnow()
    old: dict[str, Any] | None = None
    if repo._audited:
        where = [getattr(repo.model, n) == values[n] for n in conflict]
        found = (await session.execute(select(repo.table).where(*where))).mappings().first()
        if found is not None:
            old = _as_attrs(repo, found)
    ins = _dialect_insert(session, repo.model)
    if _duplicate_key_dialect(session):
        # MariaDB/MySQL: ON DUPLICATE KEY UPDATE has no RETURNING; read the row back.
        # The set clause reads ``inserted`` of the very statement it belongs to.
        with_values = ins.values(**values)
        await session.execute(
            with_values.on_duplicate_key_update(_set_clause(repo, with_values, values, conflict))
        )
        where = [getattr(repo.model, n) == values[n] for n in conflict]
        result = await session.scalars(
            select(repo.model).where(*where), execution_options={"populate_existing": True}
        )
    else:
        stmt = ins.values(**values).on_conflict_do_update(
            index_elements=[getattr(repo.model, n) for n in conflict],
            set_=_set_clause(repo, ins, values, conflict),
        )
        result = await session.scalars(
            stmt.returning(repo.model), execution_options={"populate_existing": True}
        )
    obj: T = result.one()
    key = repo._key_of(obj)
    if repo._audited:
        context = resolve_context(session.sync_session, repo._defaults)
        new = {k: getattr(obj, k) for k in repo._columns}
        row = _upsert_audit(repo, key, context, old, new)
        await session.run_sync(write_audit_rows, [row])
    repo._changed(session, [key])
    return obj


async def upsert_rows(
    repo: Repository[Any],
    session: AsyncSession,
    rows: Iterable[Any],
    conflict: Sequence[str],
    batch_size: int,
) -> int:
    """bulk_upsert: executemany INSERT ... ON CONFLICT DO UPDATE per batch."""
    table = _table(repo)
    columns = _attr_to_column(repo)
    context = resolve_context(session.sync_session, repo._defaults) if repo._audited else None
    seen: dict[tuple[Any, ...], int] = {}
    total = 0
    for batch_no, batch in enumerate(_chunks(rows, batch_size)):
        first = batch_no * batch_size
        prepared = []
        for i, row in enumerate(batch):
            values = _with_defaults(repo, _row_values(repo, row, first + i))
            missing = [n for n in conflict if n not in values]
            if missing:
                msg = f"Row {first + i}: bulk_upsert rows need the conflict_on column(s) {missing}."
                raise ValidationError(msg)
            if "updated_at" in repo._columns:
                values["updated_at"] = utcnow()
            target = tuple(values[n] for n in conflict)
            if target in seen:
                msg = (
                    f"Row {first + i} repeats the conflict_on values of row {seen[target]}; "
                    "a row can be upserted once per call. Merge the two rows."
                )
                raise ValidationError(msg)
            seen[target] = first + i
            prepared.append((first + i, values))
        old_rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        if context is not None:
            targets = [tuple(v[n] for n in conflict) for _, v in prepared]
            cols = [columns[n] for n in conflict]
            cond = (
                cols[0].in_([t[0] for t in targets])
                if len(cols) == 1
                else tuple_(*cols).in_(targets)
            )
            for found in (await session.execute(select(table).where(cond))).mappings():
                values = _as_attrs(repo, found)
                old_rows[tuple(values[n] for n in conflict)] = values
        for group in _group_by_keys(prepared):
            ins = _dialect_insert(session, table)
            if _duplicate_key_dialect(session):
                keys = await _upsert_group_mysql(repo, session, ins, group, conflict)
                if context is not None:
                    audit = [
                        _upsert_audit(
                            repo,
                            key,
                            context,
                            old_rows.get(tuple(values[n] for n in conflict)),
                            {**values, **dict(zip(repo._pk_names, key, strict=False))},
                        )
                        for key, (_, values) in zip(keys, group, strict=False)
                    ]
                    await session.run_sync(write_audit_rows, audit)
                _written(repo, session, keys)
                total += len(group)
                continue
            stmt = ins.on_conflict_do_update(
                index_elements=[columns[n] for n in conflict],
                set_=_set_clause(repo, ins, group[0][1], conflict),
            ).returning(*repo._pk_cols, sort_by_parameter_order=True)
            params = [_to_columns(repo, values) for _, values in group]
            result = await _execute_batch(session, stmt, params, group[0][0])
            keys = [tuple(r) for r in result.all()]
            if context is not None:
                audit = [
                    _upsert_audit(
                        repo,
                        key,
                        context,
                        old_rows.get(tuple(values[n] for n in conflict)),
                        {**values, **dict(zip(repo._pk_names, key, strict=False))},
                    )
                    for key, (_, values) in zip(keys, group, strict=False)
                ]
                await session.run_sync(write_audit_rows, audit)
            _written(repo, session, keys)
            total += len(group)
    return total


def _duplicate_key_dialect(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name in ("mysql", "mariadb")


async def _upsert_group_mysql(
    repo: Repository[Any],
    session: AsyncSession,
    ins: Any,
    group: list[tuple[int, dict[str, Any]]],
    conflict: Sequence[str],
) -> list[tuple[Any, ...]]:
    """One executemany INSERT ... ON DUPLICATE KEY UPDATE, then the keys, in row order."""
    columns = _attr_to_column(repo)
    stmt = ins.on_duplicate_key_update(_set_clause(repo, ins, group[0][1], conflict))
    params = [_to_columns(repo, values) for _, values in group]
    await _execute_batch(session, stmt, params, group[0][0])
    targets = [tuple(values[n] for n in conflict) for _, values in group]
    cols = [columns[n] for n in conflict]
    cond = cols[0].in_([t[0] for t in targets]) if len(cols) == 1 else tuple_(*cols).in_(targets)
    found = await session.execute(select(*cols, *repo._pk_cols).where(cond))
    width = len(cols)
    by_target = {tuple(r[:width]): tuple(r[width:]) for r in found.all()}
    return [by_target[t] for t in targets]
