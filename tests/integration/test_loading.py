"""Eager loading (``load=``) on every read and every backend."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import inspect
from sqlalchemy.orm import selectinload

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    Repository,
    RepositoryCache,
    ValidationError,
)
from asyncdb._models import utcnow
from tests.cases import each_case
from tests.integration.models import Comment, Post, Tag, Writer
from tests.integration.test_repository import counting


async def seed_blog(db: AsyncDatabaseManager) -> dict[str, Any]:
    """Two writers, three tags, three posts, comments; one of each soft-deleted."""
    async with AsyncUnitOfWork(db) as uow:
        s = uow.session
        jake = Writer(username="jake", password_hash="h1")
        ann = Writer(username="ann", password_hash="h2")
        gone = Writer(username="gone", password_hash="h3", deleted_at=utcnow())
        py, db_tag = Tag(name="python"), Tag(name="db")
        old = Tag(name="old", deleted_at=utcnow())
        p1 = Post(title="p1", writer=jake, tags=[py, db_tag, old], score=5)
        p2 = Post(title="p2", writer=ann, tags=[py], score=3)
        p3 = Post(title="p3", writer=gone, tags=[old], score=1)
        p4 = Post(title="p4", writer=jake, deleted_at=utcnow())
        s.add_all([jake, ann, gone, py, db_tag, old, p1, p2, p3, p4])
        await s.flush()
        s.add_all(
            [
                Comment(body="c1", post=p1, writer=ann),
                Comment(body="c2", post=p1, writer=jake),
                Comment(body="c3", post=p1, writer=ann, deleted_at=utcnow()),
                Comment(body="c4", post=p2, writer=gone),
            ]
        )
    return {"jake": jake.id, "ann": ann.id, "gone": gone.id, "p1": p1.id, "p3": p3.id}


def loaded(obj: Any, *names: str) -> bool:
    state = inspect(obj)
    return not (set(names) & state.unloaded)


async def test_find_by_loads_every_relationship_kind_in_three_statements(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    with counting(db) as seen:
        rows = await posts.find_by(order_by="title", load=["writer", "tags", "comments.writer"])
    # posts JOIN writer, then one SELECT ... IN for tags and one for comments (+ writer).
    assert len(seen) == 3
    assert [p.title for p in rows] == ["p1", "p2", "p3"]
    p1, p2, p3 = rows
    assert all(loaded(p, "writer", "tags", "comments") for p in rows)
    assert p1.writer.username == "jake"
    # soft-deleted related rows are not loaded: the tag "old", the comment c3, writer "gone"
    assert sorted(t.name for t in p1.tags) == ["db", "python"]
    assert [c.body for c in p1.comments] == ["c1", "c2"]
    assert [c.writer.username for c in p1.comments] == ["ann", "jake"]
    assert p3.writer is None and p3.tags == []
    assert [c.body for c in p2.comments] == ["c4"] and p2.comments[0].writer is None


async def test_with_deleted_loads_soft_deleted_related_rows(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    rows = await posts.find_by(
        title__in=["p1", "p3"], order_by="title", with_deleted=True, load=["writer", "tags"]
    )
    p1, p3 = rows
    assert sorted(t.name for t in p1.tags) == ["db", "old", "python"]
    assert p3.writer.username == "gone"


async def test_every_read_takes_load(db: AsyncDatabaseManager, blog: dict[str, Any]) -> None:
    posts = Repository(Post, db)
    p1 = blog["p1"]
    got = await posts.get(p1, load="tags")
    assert loaded(got, "tags") and len(got.tags) == 2
    maybe = await posts.get_by_id(p1, load=("comments",))
    assert maybe is not None and [c.body for c in maybe.comments] == ["c1", "c2"]
    assert await posts.get_by_id(blog["p1"] + 100, load="tags") is None
    one = await posts.find_one_by(title="p2", load=["writer"])
    assert one is not None and one.writer.username == "ann"
    every = await posts.get_all(limit=2, load=["writer"])
    assert [p.writer.username for p in every] == ["jake", "ann"]
    page = await posts.paginate(page=1, page_size=2, order_by="title", load=["tags"])
    assert page.total == 3 and [len(p.tags) for p in page.items] == [2, 1]
    keyset = await posts.paginate_keyset(limit=2, order_by="-score", load=["writer"])
    assert [p.writer.username for p in keyset.items] == ["jake", "ann"]
    nxt = await posts.paginate_keyset(
        after=keyset.next_cursor, limit=2, order_by="-score", load=["writer"]
    )
    assert [p.title for p in nxt.items] == ["p3"] and nxt.items[0].writer is None


async def test_get_of_soft_deleted_row_with_load(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    (p4,) = await posts.find_by(title="p4", with_deleted=True)
    assert await posts.get_by_id(p4.id, load="writer") is None
    found = await posts.get_by_id(p4.id, load="writer", with_deleted=True)
    assert found is not None and found.writer.username == "jake"


async def test_sqlalchemy_loader_options_pass_through(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    with counting(db) as seen:
        rows = await posts.find_by(title="p1", load=[selectinload(Post.writer), "tags"])
    assert len(seen) == 3  # the writer by its own SELECT ... IN, as asked
    assert rows[0].writer.username == "jake" and len(rows[0].tags) == 2


@each_case(
    ("load", "fragment"),
    [
        ("author", "Unknown relationship 'author'"),
        (["comments.author"], "Unknown relationship 'author' in load path 'comments.author'"),
        (["title"], "Unknown relationship 'title'"),
        (["tags."], "Unknown relationship ''"),
        ([7], "load takes relationship names"),
        ({"tags": 1}, "load takes a relationship name"),
        (["a.b.c.d.e.f"], "deeper than"),
    ],
)
async def test_bad_load_is_a_validation_error_before_sql(
    db: AsyncDatabaseManager, blog: dict[str, Any], load: Any, fragment: str
) -> None:
    posts = Repository(Post, db)
    with counting(db) as seen:
        with pytest.raises(ValidationError, match=fragment.replace(".", r"\.")):
            await posts.find_by(load=load)
        with pytest.raises(ValidationError):
            await posts.get_by_id(blog["p1"], load=load)
        with pytest.raises(ValidationError):
            await posts.paginate(load=load)
    assert seen == []


async def test_a_loaded_collection_is_refreshed_inside_a_unit(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    async with AsyncUnitOfWork(db) as uow:
        posts = uow.get_repository(Post)
        comments = uow.get_repository(Comment)
        first = await posts.get(blog["p1"], load="comments")
        assert [c.body for c in first.comments] == ["c1", "c2"]
        await comments.delete(first.comments[0].id)
        again = await posts.get(blog["p1"], load="comments")
        assert [c.body for c in again.comments] == ["c2"]


async def test_load_bypasses_the_row_cache(db: AsyncDatabaseManager, blog: dict[str, Any]) -> None:
    posts = Repository(Post, db, cache=RepositoryCache(ttl=60.0))
    await posts.get(blog["p1"])  # fills the cache with the columns only
    got = await posts.get(blog["p1"], load=["writer", "tags"])
    assert got.writer.username == "jake" and len(got.tags) == 2


async def test_writer_without_relationship_to_load(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    writers = Repository(Writer, db)
    jake = await writers.get(blog["jake"], load="posts")
    # p4 is soft-deleted: not in the collection
    assert sorted(p.title for p in jake.posts) == ["p1"]
    tags = Repository(Tag, db)
    python = await tags.find_one_by(name="python", load="posts.writer")
    assert python is not None
    assert sorted((p.title, p.writer.username) for p in python.posts) == [
        ("p1", "jake"),
        ("p2", "ann"),
    ]
