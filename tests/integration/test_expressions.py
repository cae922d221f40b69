"""where= (SQLAlchemy conditions and a base select) on every read and write by filter."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, or_, select, text

from asyncdb import AsyncDatabaseManager, Repository, RepositoryCache, ValidationError
from tests.cases import each_case
from tests.integration.models import Post, Tag, Writer
from tests.integration.test_repository import counting


async def titles(repo: Repository[Post], **kwargs: Any) -> list[str]:
    return [p.title for p in await repo.find_by(order_by="title", **kwargs)]


async def test_conditions_keep_soft_delete_and_keyword_filters(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    assert await titles(posts, where=Post.score > 2) == ["p1", "p2"]
    assert await titles(posts, where=Post.title == "p4") == []  # soft-deleted
    assert await titles(posts, where=Post.title == "p4", with_deleted=True) == ["p4"]
    assert await titles(posts, where=[Post.score > 0], writer__username="jake") == ["p1"]
    either = or_(Post.title == "p3", Post.tags.any(Tag.name == "db"))
    assert await titles(posts, where=either) == ["p1", "p3"]
    assert await titles(posts, where=func.lower(Post.title) == "p2") == ["p2"]
    one = await posts.find_one_by(where=Post.score < 4, order_by="-score", load="writer")
    assert one is not None and one.title == "p2" and one.writer.username == "ann"


async def test_a_base_select_never_repeats_or_revives_rows(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    tagged = select(Post).join(Post.tags).where(Tag.name.in_(["python", "db"]))
    assert await titles(posts, where=tagged) == ["p1", "p2"]  # p1 has both tags: once
    by_jake = select(Post).join(Post.writer).where(Writer.username == "jake")
    assert await titles(posts, where=by_jake) == ["p1"]  # p4 is soft-deleted
    assert await posts.count(where=by_jake, with_deleted=True) == 2
    assert await titles(posts, where=[tagged, Post.score > 4]) == ["p1"]


@pytest.mark.requires("foreign_key_actions")
async def test_counts_pages_and_writes_take_where(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    assert await posts.count(where=Post.score >= 1) == 3
    assert await posts.exists(where=Post.score > 4) is True
    assert await posts.exists(where=Post.score > 5) is False
    page = await posts.paginate(page=2, page_size=1, order_by="title", where=Post.score >= 3)
    assert page.total == 2 and [p.title for p in page.items] == ["p2"]
    first = await posts.paginate_keyset(limit=1, where=Post.score >= 3)
    rest = await posts.paginate_keyset(after=first.next_cursor, limit=1, where=Post.score >= 3)
    assert [p.title for p in first.items + rest.items] == ["p1", "p2"] and not rest.has_more
    assert await posts.update_by({"score": 0}, where=Post.score < 4) == 2
    assert await posts.delete_by(where=Post.score == 0) == 2
    assert await titles(posts) == ["p1"]


async def test_guarantees_still_hold_with_where(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db, max_page_size=10)
    with pytest.raises(ValidationError, match="page_size"):
        await posts.paginate(page_size=11, where=Post.score > 0)
    with pytest.raises(ValidationError, match="Unknown field 'nope'"):
        await posts.find_by(where=Post.score > 0, nope=1)
    with pytest.raises(ValidationError, match="without a filter"):
        await posts.update_by({"score": 1}, where=[])


async def test_counts_with_where_bypass_the_cache(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db, cache=RepositoryCache(ttl=60.0))
    assert await posts.count(score=5) == 1
    with counting(db) as seen:
        assert await posts.count(score=5) == 1  # keyword filters: served by the cache
    assert seen == []
    for _ in range(2):
        with counting(db) as seen:
            assert await posts.count(where=Post.score == 5) == 1
            assert await posts.exists(where=Post.score == 5) is True
        assert len(seen) == 2


@each_case(
    ("where", "fragment"),
    [
        (Writer.username == "jake", "names other table"),
        ([Post.score > 1, Writer.id == 1], "names other table"),
        (Post.title, "boolean SQL conditions"),
        (text("1 = 1"), "boolean SQL conditions"),
        ([text("1 = 1")], "raw SQL text is not accepted"),
        ("score > 3", "boolean SQL conditions"),
        ([Post.score > 1, 5], "boolean SQL conditions"),
        (select(Writer), "must be select\\(Post\\)"),
        (select(Post.id), "must be select\\(Post\\)"),
        (select(Post, Writer).join(Post.writer), "must be select\\(Post\\)"),
    ],
)
async def test_bad_where_is_a_validation_error_before_sql(
    db: AsyncDatabaseManager, blog: dict[str, Any], where: Any, fragment: str
) -> None:
    posts = Repository(Post, db)
    with counting(db) as seen:
        for call in (
            lambda: posts.find_by(where=where),
            lambda: posts.count(where=where),
            lambda: posts.exists(where=where),
            lambda: posts.paginate(where=where),
            lambda: posts.paginate_keyset(where=where),
            lambda: posts.delete_by(where=where),
        ):
            with pytest.raises(ValidationError, match=fragment):
                await call()
    assert seen == []
    assert await posts.count() == 3
