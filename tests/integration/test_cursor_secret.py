"""Keyset cursors are signed with ``cursor_secret``, never with a key derived from the URL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from typing import Any

import pytest

from asyncdb import AsyncDatabaseManager, ConfigurationError, Repository, ValidationError
from asyncdb._pagination import CursorCodec, codec_for_secrets
from tests.cases import each_case
from tests.integration.conftest import empty_tables, manager_for
from tests.integration.models import Item
from tests.integration.test_repository import counting

SECRET_A = "a" * 16 + "-first-secret"
SECRET_B = "b" * 16 + "-second-secret"


def _forge(key: bytes, scope: str, values: list[Any]) -> str:
    body = json.dumps({"s": scope, "v": values}, separators=(",", ":")).encode()
    token = hmac.new(key, body, hashlib.sha256).digest()[:16] + body
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


async def _seeded(db_url: str, **settings: Any) -> AsyncDatabaseManager:
    manager = manager_for(db_url, **settings)
    await manager.connect()
    await empty_tables(manager)
    await Repository(Item, manager).bulk_create(
        [{"name": f"n{i:02d}", "qty": i % 5} for i in range(20)]
    )
    return manager


async def test_url_derived_key_cannot_forge_a_cursor(db_url: str) -> None:
    """The old scheme (sha256 of the URL) no longer signs: a forged cursor is refused."""
    db = await _seeded(db_url, cursor_secret=SECRET_A)
    try:
        items = Repository(Item, db)
        url_key = hashlib.sha256(b"asyncdb-keyset-cursor\0" + db.settings.url.encode()).digest()
        forged = _forge(url_key, "t_item|id", [0])
        with counting(db) as seen, pytest.raises(ValidationError, match="cursor is invalid"):
            await items.paginate_keyset(after=forged, limit=3)
        assert seen == []
    finally:
        await db.dispose()


async def test_rotation_first_signs_all_verify(db_url: str) -> None:
    old = await _seeded(db_url, cursor_secret=SECRET_A)
    try:
        page = await Repository(Item, old).paginate_keyset(limit=5, order_by="qty")
        cursor = page.next_cursor
        assert cursor is not None
        expected = await Repository(Item, old).paginate_keyset(
            after=cursor, limit=5, order_by="qty"
        )
    finally:
        await old.dispose()
    # The same rows again (a :memory: database dies with its manager), under rotated secrets.
    rotated = await _seeded(db_url, cursor_secret=(SECRET_B, SECRET_A))
    try:
        repo = Repository(Item, rotated)
        again = await repo.paginate_keyset(after=cursor, limit=5, order_by="qty")
        assert [i.name for i in again.items] == [i.name for i in expected.items]
        fresh = await repo.paginate_keyset(limit=5, order_by="qty")
        assert fresh.next_cursor is not None
        assert fresh.next_cursor != cursor  # now signed by the new first secret
    finally:
        await rotated.dispose()
    only_new = await _seeded(db_url, cursor_secret=SECRET_B)
    try:
        new_repo = Repository(Item, only_new)
        with pytest.raises(ValidationError, match="cursor is invalid"):
            await new_repo.paginate_keyset(after=cursor, limit=5, order_by="qty")
        again = await new_repo.paginate_keyset(after=fresh.next_cursor, limit=5, order_by="qty")
        assert [i.name for i in again.items] == [i.name for i in expected.items]
    finally:
        await only_new.dispose()


@each_case(
    "values",
    [
        ["1; DROP TABLE t_item"],  # a string where the key is an integer
        [{"f": "1.5"}],  # a float for an integer column
        [True],  # bool is not an integer here
        [None],  # NULL for a primary key
        [{"dt": "2020-01-01T00:00:00"}],
    ],
)
async def test_validly_signed_cursor_with_wrong_types_is_rejected_before_sql(
    db_url: str, values: list[Any]
) -> None:
    db = await _seeded(db_url, cursor_secret=SECRET_A)
    try:
        key = hashlib.sha256(b"asyncdb-keyset-cursor\0" + SECRET_A.encode()).digest()
        forged = _forge(key, "t_item|id", values)
        with counting(db) as seen, pytest.raises(ValidationError, match="cursor"):
            await Repository(Item, db).paginate_keyset(after=forged, limit=3)
        assert seen == []
        # A well-typed value signed the same way is accepted (so the check is by type).
        ok = _forge(key, "t_item|id", [3])
        page = await Repository(Item, db).paginate_keyset(after=ok, limit=3)
        assert [i.id for i in page.items] == [4, 5, 6]
    finally:
        await db.dispose()


async def test_string_sort_column_refuses_integer_value(db_url: str) -> None:
    db = await _seeded(db_url, cursor_secret=SECRET_A)
    try:
        key = hashlib.sha256(b"asyncdb-keyset-cursor\0" + SECRET_A.encode()).digest()
        forged = _forge(key, "t_item|name,id", [5, 1])
        with counting(db) as seen, pytest.raises(ValidationError, match="'name'"):
            await Repository(Item, db).paginate_keyset(after=forged, limit=3, order_by="name")
        assert seen == []
    finally:
        await db.dispose()


def test_unset_secret_is_random_per_process_and_warns_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncdb import _pagination

    monkeypatch.setattr(_pagination, "_process_secret", None)
    with caplog.at_level(logging.WARNING, logger="asyncdb"):
        first = codec_for_secrets(None)
        second = codec_for_secrets(None)
    warnings = [r for r in caplog.records if "cursor_secret" in r.getMessage()]
    assert len(warnings) == 1
    assert "restart" in warnings[0].getMessage()
    token = first.encode("s", [1])
    assert second.decode("s", token, 1) == [1]
    monkeypatch.setattr(_pagination, "_process_secret", None)
    with caplog.at_level(logging.WARNING, logger="asyncdb"):
        other_process = codec_for_secrets(None)
    with pytest.raises(ValidationError):
        other_process.decode("s", token, 1)


def test_configured_secret_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="asyncdb"):
        codec_for_secrets((SECRET_A,))
    assert not [r for r in caplog.records if "cursor_secret" in r.getMessage()]


def test_codec_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        CursorCodec([])


@pytest.mark.parametrize("bad", ["short", "", ["ok" * 10, "x"], [], 42, [b"x" * 20]])
def test_weak_or_malformed_secret_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="cursor_secret"):
        AsyncDatabaseManager("sqlite+aiosqlite:///:memory:", cursor_secret=bad)


def test_secret_from_env_is_comma_separated_and_masked_in_repr() -> None:
    from asyncdb import DatabaseSettings

    settings = DatabaseSettings.from_env(
        {"ASYNCDB_CURSOR_SECRET": f"{SECRET_A}, {SECRET_B}", "ASYNCDB_URL": "sqlite:///:memory:"}
    )
    assert settings.cursor_secret == (SECRET_A, SECRET_B)
    assert SECRET_A not in repr(settings) and SECRET_B not in repr(settings)
    assert "cursor_secret='***'" in repr(settings)
    empty = DatabaseSettings.from_env({"ASYNCDB_CURSOR_SECRET": ""})
    assert empty.cursor_secret is None
