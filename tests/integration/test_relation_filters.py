"""Filters through relationships (``writer__username=...``) on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from asyncdb import AsyncDatabaseManager, Repository, RepositoryCache, ValidationError
from tests.cases import each_case
from tests.integration.models import Comment, Post, Writer
from tests.integration.test_repository import counting


async def titles(repo: Repository[Post], **filters: Any) -> list[str]:
    return [p.title for p in await repo.find_by(order_by="title", **filters)]


async def test_many_to_one_filter(db: AsyncDatabaseManager, blog: dict[str, Any]) -> None:
    posts = Repository(Post, db)
    assert await titles(posts, writer__username="jake") == ["p1"]
    # p4 is itself soft-deleted: back with with_deleted=True
    assert await titles(posts, writer__username="jake", with_deleted=True) == ["p1", "p4"]
    assert await titles(posts, writer__username__in=["jake", "ann"]) == ["p1", "p2"]
    assert await titles(posts, writer__id=blog["ann"], score__gte=1) == ["p2"]


async def test_soft_deleted_related_rows_never_match(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    assert await titles(posts, writer__username="gone") == []
    assert await titles(posts, writer__username="gone", with_deleted=True) == []
    assert await titles(posts, tags__name="old") == []
    assert await titles(posts, comments__body="c3") == []
    # c4 exists, but its writer is soft-deleted
    assert await titles(posts, comments__writer__username="gone") == []


async def test_collection_filters_never_duplicate_rows(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    assert await titles(posts, tags__name__in=["python", "db"]) == ["p1", "p2"]
    assert await titles(posts, tags__name="db") == ["p1"]
    assert await posts.count(tags__name__in=["python", "db"]) == 2
    assert await posts.exists(tags__name="db") is True
    assert await posts.exists(tags__name="nope") is False


async def test_filters_on_one_relationship_hold_for_the_same_related_row(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    # p1 has a tag "python" and a tag "db", but no single tag is both
    assert await titles(posts, tags__name="python", tags__name__ne="python") == []
    assert await titles(posts, tags__name="python", tags__name__like="py%") == ["p1", "p2"]


async def test_nested_paths(db: AsyncDatabaseManager, blog: dict[str, Any]) -> None:
    posts = Repository(Post, db)
    assert await titles(posts, comments__writer__username="ann") == ["p1"]
    writers = Repository(Writer, db)
    found = await writers.find_by(posts__tags__name="db")
    assert [w.username for w in found] == ["jake"]
    comments = Repository(Comment, db)
    on_python = await comments.find_by(post__tags__name="python", order_by="body")
    assert [c.body for c in on_python] == ["c1", "c2", "c4"]


async def test_relation_filters_with_pages_and_loads(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    page = await posts.paginate(page=1, page_size=1, tags__name="python", load="writer")
    assert page.total == 2 and page.items[0].writer.username == "jake"
    keyset = await posts.paginate_keyset(limit=1, tags__name="python")
    rest = await posts.paginate_keyset(after=keyset.next_cursor, limit=1, tags__name="python")
    assert [p.title for p in keyset.items + rest.items] == ["p1", "p2"]
    one = await posts.find_one_by(comments__writer__username="jake", load=["comments"])
    assert one is not None and one.title == "p1"


@each_case(
    ("filters", "fragment"),
    [
        ({"writer__password_hash": "h1"}, "Writer.password_hash cannot be used to filter"),
        ({"comments__writer__password_hash__like": "h%"}, "Writer.password_hash cannot be"),
        ({"writer__nope": "x"}, "Unknown field 'nope' for Writer"),
        ({"writer__username__near": "x"}, "Unknown filter operator 'near'"),
        ({"writer": 1}, "Unknown field 'writer' for Post"),
        ({"writer__id": "abc"}, "id"),
        ({"posts__writer__posts__writer__posts__writer__id": 1}, "at most 5 relationships"),
    ],
)
async def test_bad_relation_filters_are_validation_errors_before_sql(
    db: AsyncDatabaseManager, blog: dict[str, Any], filters: dict[str, Any], fragment: str
) -> None:
    repo: Repository[Any] = Repository(Writer if "posts__" in next(iter(filters)) else Post, db)
    with counting(db) as seen:
        with pytest.raises(ValidationError, match=fragment):
            await repo.find_by(**filters)
        with pytest.raises(ValidationError, match=fragment):
            await repo.count(**filters)
    assert seen == []


@pytest.mark.requires("foreign_key_actions")
async def test_counts_through_relationships_bypass_the_cache(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db, cache=RepositoryCache(ttl=60.0))
    writers = Repository(Writer, db)
    assert await posts.count(writer__username="jake") == 1
    assert await posts.exists(writer__username="jake") is True
    await writers.update(blog["jake"], username="jim")  # commits Writer, not Post
    assert await posts.count(writer__username="jake") == 0
    assert await posts.exists(writer__username="jake") is False
