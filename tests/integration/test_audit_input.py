"""Bad audit metadata is refused when it is set, not by every later write (issue 14, 12-13)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    AuditLog,
    Repository,
    ValidationError,
    audit_context,
    cleanup_audit_logs,
    get_audit_logs,
)
from asyncdb._audit import TRUNCATED_MARKER, audit_row
from asyncdb._audit_model import AuditAction
from asyncdb._context import EMPTY_CONTEXT, MAX_AUDIT_ID_LENGTH, AuditContext
from tests.cases import each_case
from tests.integration.models import Item
from tests.integration.test_repository import counting

BAD_IDS: list[Any] = [
    "u" * (MAX_AUDIT_ID_LENGTH + 1),
    "nul\x00byte",
    "lone \ud800 surrogate",
    {"not": "an id"},
    True,
]
BAD_EXTRAS: list[dict[str, Any]] = [
    {"when": object()},
    {"ratio": math.nan},
    {"big": "x" * (64 * 1024 + 1)},
    {"nul": "a\x00b"},
]


def test_the_id_limit_is_the_audit_columns_width() -> None:
    for name in ("user_id", "session_id", "correlation_id"):
        assert AuditLog.__table__.c[name].type.length == MAX_AUDIT_ID_LENGTH


@each_case(
    ("field", "bad"),
    [
        pytest.param(field, bad, id=f"{field}={bad!r:.20}")
        for bad in BAD_IDS
        for field in ("user_id", "session_id", "correlation_id")
    ],
)
async def test_bad_ids_are_refused_where_they_are_set(
    db: AsyncDatabaseManager, field: str, bad: Any
) -> None:
    with pytest.raises(ValidationError, match=field):
        audit_context(**{field: bad})
    with pytest.raises(ValidationError, match=field):
        AsyncUnitOfWork(db, **{field: bad})
    with pytest.raises(ValidationError, match=field):
        Repository(Item, db).set_context(**{field: bad})
    # Nothing was poisoned: the next audited write works and is logged, once.
    before = await get_audit_logs(db)
    item = await Repository(Item, db).create(name="ok")
    after = await get_audit_logs(db)
    assert [r.entity_id for r in after] == [str(item.id)] + [r.entity_id for r in before]


@each_case("extra", BAD_EXTRAS)
async def test_bad_extras_are_refused_where_they_are_set(
    db: AsyncDatabaseManager, extra: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError, match="extras"):
        audit_context(**extra)
    with pytest.raises(ValidationError, match="extras"):
        AsyncUnitOfWork(db, **extra)
    with pytest.raises(ValidationError, match="string keys"):
        AuditContext.of(extra={1: "int key"})
    item = await Repository(Item, db).create(name="ok")
    assert len(await get_audit_logs(db, entity_id=item.id)) == 1


async def test_longest_allowed_ids_and_json_extras_are_stored(db: AsyncDatabaseManager) -> None:
    longest = "u" * MAX_AUDIT_ID_LENGTH
    async with audit_context(user_id=longest, session_id=7, note="ünïcode", n=[1, 2.5]):
        item = await Repository(Item, db).create(name="a")
    (row,) = await get_audit_logs(db, entity_id=item.id)
    assert row.user_id == longest and row.session_id == "7"
    assert row.extra == {"note": "ünïcode", "n": [1, 2.5]}


def test_oversized_value_becomes_a_marker_with_size_and_head() -> None:
    big = "é" * 40_000  # 80,000 UTF-8 bytes: over the default 64 KiB cap
    small = "b" * 100
    row = audit_row(Item, AuditAction.UPDATE, "1", EMPTY_CONTEXT, new={"name": big, "sku": small})
    marker = row["new_values"]["name"][TRUNCATED_MARKER]
    assert marker["bytes"] == len(big.encode())
    assert big.startswith(marker["head"]) and 0 < len(marker["head"].encode()) < 64 * 1024
    assert row["new_values"]["sku"] == small
    nested = {"k": ["v" * 70_000]}
    row = audit_row(Item, AuditAction.UPDATE, "1", EMPTY_CONTEXT, old={"category": nested})
    assert TRUNCATED_MARKER in row["old_values"]["category"]


async def test_a_lower_model_cap_truncates_what_is_written(db: AsyncDatabaseManager) -> None:
    Item.__audit_max_value_bytes__ = 16
    try:
        item = await Repository(Item, db).create(name="x" * 40)
    finally:
        del Item.__audit_max_value_bytes__
    (row,) = await get_audit_logs(db, entity_id=item.id)
    assert row.new_values is not None
    assert row.new_values["name"] == {TRUNCATED_MARKER: {"bytes": 40, "head": "xx"}}
    assert row.new_values["qty"] == 0
    assert (await Repository(Item, db).get(item.id)).name == "x" * 40


@each_case("days", [math.nan, math.inf, -math.inf, 10**12, 0, "30", None, True])
async def test_cleanup_rejects_impossible_retention(db: AsyncDatabaseManager, days: Any) -> None:
    item = await Repository(Item, db).create(name="kept")
    logs = [(r.id, r.entity_id) for r in await get_audit_logs(db)]
    assert str(item.id) in [entity for _, entity in logs]  # retention 0 would delete it
    with counting(db) as seen, pytest.raises(ValidationError, match="retention_days"):
        await cleanup_audit_logs(db, retention_days=days)
    assert seen == []
    assert [(r.id, r.entity_id) for r in await get_audit_logs(db)] == logs


@each_case(
    ("name", "value"),
    [("since", "yesterday"), ("until", 1700000000), ("table_name", 5), ("correlation_id", [])],
)
async def test_get_audit_logs_rejects_wrong_types(
    db: AsyncDatabaseManager, name: str, value: Any
) -> None:
    with counting(db) as seen, pytest.raises(ValidationError, match=name):
        await get_audit_logs(db, **{name: value})
    assert seen == []
