"""annotate= (Count/Exists per row), paginate_offset and count_by on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from asyncdb import (
    AsyncDatabaseManager,
    Count,
    Exists,
    OffsetPage,
    Repository,
    ValidationError,
)
from tests.cases import each_case
from tests.integration.models import Comment, Item, Post, Writer
from tests.integration.test_repository import counting


def values(rows: list[Any], *names: str) -> list[tuple[Any, ...]]:
    return [(row.title, *(getattr(row, n) for n in names)) for row in rows]


async def test_counts_and_flags_per_row_in_one_query(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    annotate = {
        "n_comments": Count("comments"),
        "n_tags": Count("tags"),
        "n_commenters": Count("comments.writer"),
        "ann_commented": Exists("comments.writer", username="ann"),
        "tagged_db": Exists("tags", name="db"),
        "has_comments": Exists("comments"),
    }
    with counting(db) as seen:
        rows = await posts.find_by(order_by="title", annotate=annotate)
    assert len(seen) == 1
    names = list(annotate)
    # soft-deleted related rows never count: comment c3, tag "old", writer "gone"
    assert values(rows, *names) == [
        ("p1", 2, 2, 2, True, True, True),
        ("p2", 1, 1, 0, False, False, True),
        ("p3", 0, 0, 0, False, False, False),
    ]
    assert all(type(r.ann_commented) is bool for r in rows)
    assert all(type(r.n_comments) is int for r in rows)


async def test_annotations_with_pages_loads_and_filters(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    annotate = {"n_comments": Count("comments", body__ne="c2")}
    with counting(db) as seen:
        page = await posts.paginate(
            page=1, page_size=2, order_by="title", load=["writer", "tags"], annotate=annotate
        )
    assert len(seen) == 3  # count, rows (+ writers joined), tags
    assert values(page.items, "n_comments") == [("p1", 1), ("p2", 1)]
    assert page.items[0].writer.username == "jake" and len(page.items[0].tags) == 2
    keyset = await posts.paginate_keyset(limit=1, order_by="-score", annotate=annotate)
    assert values(keyset.items, "n_comments") == [("p1", 1)]
    sliced = await posts.paginate_offset(limit=2, offset=1, annotate=annotate)
    assert values(sliced.items, "n_comments") == [("p2", 1), ("p3", 0)]
    one = await posts.get(blog["p1"], annotate={"n": Count("tags")}, load="writer")
    assert one.n == 2 and one.writer.username == "jake"
    found = await posts.find_one_by(tags__name="python", annotate={"n": Count("tags")})
    assert found is not None and found.n == 2
    writers = Repository(Writer, db)
    with_counts = await writers.get_all(annotate={"n_posts": Count("posts")})
    assert {w.username: w.n_posts for w in with_counts} == {"jake": 1, "ann": 1}


@each_case(
    ("annotate", "fragment"),
    [
        ({"n": Count("nope")}, "Unknown relationship 'nope'"),
        ({"n": Count("comments.nope")}, "Unknown relationship 'nope' in path 'comments.nope'"),
        ({"n": Count("")}, "names relationships"),
        ({"n": Count("comments", nope=1)}, "Unknown field 'nope' for Comment"),
        ({"n": Exists("writer", password_hash="h1")}, "Writer.password_hash cannot be used"),
        ({"n": Count("writer", password_hash="h1")}, "Writer.password_hash cannot be used"),
        ({"n": Count("a.b.c.d.e.f")}, "deeper than"),
        ({"title": Count("tags")}, "already an attribute of Post"),
        ({"tags": Count("tags")}, "already an attribute of Post"),
        ({"_n": Count("tags")}, "public identifiers"),
        ({"n-1": Count("tags")}, "public identifiers"),
        ({"n": "tags"}, "must be Count"),
        (["n"], "annotate takes a mapping"),
    ],
)
async def test_bad_annotations_are_validation_errors_before_sql(
    db: AsyncDatabaseManager, blog: dict[str, Any], annotate: Any, fragment: str
) -> None:
    posts = Repository(Post, db)
    with counting(db) as seen:
        with pytest.raises(ValidationError, match=fragment):
            await posts.find_by(annotate=annotate)
        with pytest.raises(ValidationError, match=fragment):
            await posts.paginate(annotate=annotate)
        with pytest.raises(ValidationError, match=fragment):
            await posts.get(blog["p1"], annotate=annotate)
    assert seen == []


def test_aggregate_repr_hides_values() -> None:
    assert repr(Exists("favorited_by", id=12345)) == "Exists('favorited_by', id=...)"
    assert repr(Count("comments")) == "Count('comments')"


async def test_paginate_offset(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db, max_page_size=50)
    await items.bulk_create([{"name": f"n{i:02}", "qty": i % 3} for i in range(10)])
    await items.delete(1)
    page = await items.paginate_offset(limit=3, offset=3, order_by="name")
    assert isinstance(page, OffsetPage)
    assert [i.name for i in page.items] == ["n04", "n05", "n06"]
    assert (page.total, page.limit, page.offset, page.has_next, page.has_previous) == (
        9,
        3,
        3,
        True,
        True,
    )
    last = await items.paginate_offset(limit=5, offset=7, order_by="name")
    assert [i.name for i in last.items] == ["n08", "n09"] and not last.has_next
    beyond = await items.paginate_offset(limit=5, offset=100)
    assert beyond.items == [] and beyond.total == 9
    filtered = await items.paginate_offset(limit=2, qty=0, where=Item.name != "n03")
    assert filtered.total == 2 and [i.name for i in filtered.items] == ["n06", "n09"]
    everything = await items.paginate_offset(with_deleted=True)
    assert everything.total == 10 and not everything.has_previous


@each_case(
    ("kwargs", "fragment"),
    [
        ({"limit": 0}, "limit must be an integer between 1 and 50"),
        ({"limit": 51}, "limit must be an integer between 1 and 50"),
        ({"limit": True}, "limit must be"),
        ({"offset": -1}, "offset must be"),
        ({"offset": "-3"}, "offset must be"),
        ({"nope": 1}, "Unknown field 'nope'"),
        ({"order_by": "nope"}, "Unknown order_by field"),
    ],
)
async def test_bad_paginate_offset(
    db: AsyncDatabaseManager, kwargs: dict[str, Any], fragment: str
) -> None:
    items = Repository(Item, db, max_page_size=50)
    with counting(db) as seen, pytest.raises(ValidationError, match=fragment):
        await items.paginate_offset(**kwargs)
    assert seen == []


async def test_count_by(db: AsyncDatabaseManager, blog: dict[str, Any]) -> None:
    posts = Repository(Post, db)
    jake, ann, gone = blog["jake"], blog["ann"], blog["gone"]
    assert await posts.count_by("writer_id") == {jake: 1, ann: 1, gone: 1}
    assert await posts.count_by("writer_id", with_deleted=True) == {jake: 2, ann: 1, gone: 1}
    assert await posts.count_by("writer_id", tags__name="python") == {jake: 1, ann: 1}
    assert await posts.count_by("writer_id", where=Post.score > 4) == {jake: 1}
    items = Repository(Item, db)
    await items.bulk_create([{"name": "a"}, {"name": "b", "category": "x"}, {"name": "c"}])
    assert await items.count_by("category") == {None: 2, "x": 1}
    comments = Repository(Comment, db)
    assert await comments.count_by("post_id", writer__username="ann") == {blog["p1"]: 1}


async def test_bad_count_by(db: AsyncDatabaseManager, blog: dict[str, Any]) -> None:
    writers = Repository(Writer, db)
    with counting(db) as seen:
        with pytest.raises(ValidationError, match="password_hash cannot be used"):
            await writers.count_by("password_hash")
        with pytest.raises(ValidationError, match="Unknown count_by field 'nope'"):
            await writers.count_by("nope")
        with pytest.raises(ValidationError, match="Unknown count_by field"):
            await writers.count_by(["username"])  # type: ignore[arg-type]
    assert seen == []


async def test_count_by_refuses_too_many_groups(
    db: AsyncDatabaseManager, blog: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncdb import _repository_counts

    monkeypatch.setattr(_repository_counts, "MAX_GROUPS", 2)
    with pytest.raises(ValidationError, match="more than 2 distinct values"):
        await Repository(Post, db).count_by("writer_id")


@pytest.mark.requires("foreign_key_actions")
async def test_association_only_paths(db: AsyncDatabaseManager, blog: dict[str, Any]) -> None:
    """Counts and key filters over a many-to-many to a model without soft delete read the
    association table alone (also self-referential); the results are the same."""
    from sqlalchemy import insert

    from tests.integration.models import Reader, post_likes, reader_follows

    readers = Repository(Reader, db)
    await readers.bulk_create([{"name": n, "token": f"t-{n}"} for n in ("r1", "r2", "r3")])
    async with db.session() as session:
        await session.execute(
            insert(post_likes),
            [{"post_id": blog["p1"], "reader_id": r} for r in (1, 2, 3)]
            + [{"post_id": blog["p3"], "reader_id": 2}],
        )
        await session.execute(
            insert(reader_follows),
            [{"follower_id": 1, "followed_id": 2}, {"follower_id": 3, "followed_id": 2}],
        )
        await session.commit()
    posts = Repository(Post, db)
    annotate = {"likes": Count("liked_by"), "mine": Exists("liked_by", id=2)}
    rows = await posts.find_by(order_by="title", annotate=annotate)
    assert values(rows, "likes", "mine") == [("p1", 3, True), ("p2", 0, False), ("p3", 1, True)]
    assert [p.title for p in await posts.find_by(liked_by__id=3)] == ["p1"]
    assert await posts.count(liked_by__id__in=[2, 9]) == 2
    assert await posts.count(liked_by__name="r2") == 2  # not a key: joins the readers
    followed = await readers.find_by(
        order_by="id", annotate={"n": Count("followers"), "by_me": Exists("followers", id=1)}
    )
    assert [(r.name, r.n, r.by_me) for r in followed] == [
        ("r1", 0, False),
        ("r2", 2, True),
        ("r3", 0, False),
    ]
    assert [r.name for r in await readers.find_by(followers__id=3)] == ["r2"]
    assert await posts.update_by({"score": 9}, liked_by__id=2) == 2
    assert sorted(p.title for p in await posts.find_by(score=9)) == ["p1", "p3"]
    assert await posts.delete_by(liked_by__id__in=[1]) == 1
    assert await posts.count(liked_by__id=2) == 1
    with pytest.raises(ValidationError, match=r"Reader\.token cannot be used"):
        await posts.find_by(liked_by__token="t-r1")
