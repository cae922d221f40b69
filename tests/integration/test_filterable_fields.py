"""Secret columns are never filterable or orderable unless allowed (issue 14, item 4)."""

from __future__ import annotations

from typing import Any

import pytest

from asyncdb import AsyncDatabaseManager, ConfigurationError, Repository, ValidationError
from tests.cases import each_case
from tests.integration.models import Account, Profile
from tests.integration.test_repository import counting


@pytest.fixture
async def accounts(db: AsyncDatabaseManager) -> Repository[Account]:
    repo = Repository(Account, db)
    await repo.create(email="a@x", password_hash="abc123")
    return repo


SECRET_QUERIES: list[dict[str, Any]] = [
    {"password_hash__like": "a%"},
    {"password_hash": "abc123"},
    {"password_hash__gt": "a"},
    {"password_hash__in": ["abc123"]},
    {"password_hash__is_null": False},
]


@each_case("query", SECRET_QUERIES)
async def test_secret_column_is_not_filterable(
    db: AsyncDatabaseManager, accounts: Repository[Account], query: dict[str, Any]
) -> None:
    for call in (accounts.find_by, accounts.count, accounts.exists, accounts.paginate):
        with counting(db) as seen, pytest.raises(ValidationError, match="filterable"):
            await call(**query)
        assert seen == []


@each_case("order_by", ["password_hash", "-password_hash", ["email", "password_hash"]])
async def test_secret_column_is_not_orderable(
    db: AsyncDatabaseManager, accounts: Repository[Account], order_by: Any
) -> None:
    for call in (accounts.find_by, accounts.paginate, accounts.paginate_keyset):
        with counting(db) as seen, pytest.raises(ValidationError, match="filterable"):
            await call(order_by=order_by)
        assert seen == []


async def test_secret_column_is_still_writable_and_readable(
    accounts: Repository[Account],
) -> None:
    (row,) = await accounts.find_by(email="a@x")
    assert row.password_hash == "abc123"
    await accounts.update(row.id, password_hash="new")
    assert (await accounts.get(row.id)).password_hash == "new"


async def test_repository_allow_list_limits_and_can_allow_a_secret(
    db: AsyncDatabaseManager, accounts: Repository[Account]
) -> None:
    narrow = Repository(Account, db, filterable=["email"])
    assert await narrow.count(email="a@x") == 1
    with pytest.raises(ValidationError, match="filterable"):
        await narrow.count(balance=0)
    with pytest.raises(ValidationError, match="filterable"):
        await narrow.find_by(order_by="id")
    trusted = Repository(Account, db, filterable=["email", "password_hash"])
    assert await trusted.count(password_hash="abc123") == 1


async def test_model_allow_list(db: AsyncDatabaseManager) -> None:
    profiles = Repository(Profile, db)
    await profiles.create(handle="a", score=1, bio="hello")
    assert await profiles.count(handle="a", score__gte=1) == 1
    assert [p.handle for p in await profiles.find_by(order_by="-score")] == ["a"]
    for query in ({"bio": "hello"}, {"id": 1}, {"order_by": "bio"}):
        with pytest.raises(ValidationError, match="filterable"):
            await profiles.find_by(**query)
    with pytest.raises(ValidationError, match="Unknown field 'nope'"):
        await profiles.count(nope=1)
    # A repository's own allow-list replaces the model's.
    assert await Repository(Profile, db, filterable=["bio"]).count(bio="hello") == 1


def test_allow_list_with_unknown_column_is_a_configuration_error(
    db: AsyncDatabaseManager,
) -> None:
    with pytest.raises(ConfigurationError, match="nope"):
        Repository(Account, db, filterable=["email", "nope"])
