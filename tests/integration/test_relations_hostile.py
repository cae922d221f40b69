"""A hostile review of issue 15's inputs: relation paths, load=, where=, annotate=,
update_by/delete_by, paginate_offset and count_by, fed what an attacker (or a tired
user) would send. Every refusal is an asyncdb error sent before any SQL, data intact."""

from __future__ import annotations

import decimal
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import Boolean, func, literal_column, select, text, true
from sqlalchemy.orm import aliased, selectinload

from asyncdb import (
    AsyncDatabaseManager,
    AuditAction,
    Count,
    Exists,
    Repository,
    RepositoryCache,
    ValidationError,
    audit_context,
    get_audit_logs,
)
from tests.cases import each_case
from tests.integration.models import Account, Comment, Item, Post, Reader, Writer
from tests.integration.test_repository import counting


async def snapshot(db: AsyncDatabaseManager) -> list[tuple[Any, ...]]:
    posts = await Repository(Post, db).get_all(with_deleted=True)
    writers = await Repository(Writer, db).get_all(with_deleted=True)
    return [(p.id, p.title, p.score, p.deleted_at) for p in posts] + [
        (w.id, w.username, w.password_hash, w.deleted_at) for w in writers
    ]


async def refused(
    db: AsyncDatabaseManager, call: Callable[[], Awaitable[Any]], fragment: str
) -> str:
    """``call`` raises a ValidationError matching ``fragment`` and sends no SQL."""
    with counting(db) as seen, pytest.raises(ValidationError, match=fragment) as caught:
        await call()
    assert seen == []
    return str(caught.value)


# -- relationship paths -------------------------------------------------------------------


@each_case(
    ("filters", "fragment"),
    [
        ({"writer__password_hash": "h1"}, "password_hash cannot be used"),
        ({"writer__password_hash__like": "h%"}, "password_hash cannot be used"),
        ({"comments__writer__password_hash__gt": ""}, "password_hash cannot be used"),
        ({"writer__posts__writer__password_hash": "h1"}, "password_hash cannot be used"),
        ({"liked_by__token": "t"}, "token cannot be used"),
        ({"liked_by__token__in": ["t"]}, "token cannot be used"),
        ({"writer___sa_instance_state": 1}, "Unknown field"),
        ({"writer__metadata": 1}, "Unknown field 'metadata'"),
        ({"writer__registry__x": 1}, "Unknown filter operator"),
        ({"writer__posts": 1}, "Unknown field 'posts'"),
        ({"writer__posts__in": [1]}, "Unknown field 'in'"),
        ({"writer____class__": 1}, "Unknown filter operator"),
        ({"writer__": 1}, "Unknown filter operator"),
        ({"__class__": 1}, "Unknown filter operator"),
        ({"_sa_instance_state": 1}, "Unknown field"),
        ({"writer__username__like": 5}, "string pattern"),
        ({"tags__id__in": "1,2"}, "list of values"),
        ({"writer__id": "abc"}, "integer"),
        (
            {"writer__posts__writer__posts__writer__posts__title": "p1"},
            "at most 5 relationships",
        ),
    ],
)
async def test_hostile_relation_paths(
    db: AsyncDatabaseManager, blog: dict[str, Any], filters: dict[str, Any], fragment: str
) -> None:
    posts = Repository(Post, db)
    before = await snapshot(db)
    for call in (
        lambda: posts.find_by(**filters),
        lambda: posts.count(**filters),
        lambda: posts.paginate_offset(**filters),
        lambda: posts.count_by("score", **filters),
        lambda: posts.update_by({"score": 0}, **filters),
        lambda: posts.delete_by(**filters),
        lambda: posts.find_by(annotate={"n": Exists("writer.posts", **filters)}),
    ):
        message = await refused(db, call, fragment)
        assert "h1" not in message and "'t'" not in message
    assert await snapshot(db) == before


async def test_a_path_back_to_the_model_keeps_the_repository_allow_list(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    # The repository narrows Post's filterable fields to the title: going out and back
    # (writer -> posts) must not reach Post.score.
    posts = Repository(Post, db, filterable=["title"])
    for filters in ({"writer__posts__score__gt": 3}, {"comments__post__score": 5}):
        await refused(db, lambda f=filters: posts.find_by(**f), "score cannot be used")  # type: ignore[misc]
    assert [p.title for p in await posts.find_by(writer__posts__title="p2")] == ["p2"]


# -- load= --------------------------------------------------------------------------------


@each_case(
    ("load", "fragment"),
    [
        (123, "load takes"),
        ({"writer"}, "load takes"),
        ({"writer": 1}, "load takes"),
        (b"writer", "load takes"),
        (["writer", None], "load takes"),
        ([""], "load takes"),
        ("writer.", "Unknown relationship ''"),
        (".writer", "Unknown relationship ''"),
        ("password_hash", "Unknown relationship 'password_hash'"),
        ("title", "Unknown relationship 'title'"),
        ("__class__", "Unknown relationship '__class__'"),
        ("_sa_instance_state", "Unknown relationship"),
        ("writer.password_hash", "Unknown relationship 'password_hash'"),
        ("writer.posts.writer.posts.writer.posts", "deeper than 5"),
        ([text("writer")], "load takes"),
        ([selectinload(Writer.posts)], "starts at Writer, not at Post"),
    ],
)
async def test_hostile_load(
    db: AsyncDatabaseManager, blog: dict[str, Any], load: Any, fragment: str
) -> None:
    posts = Repository(Post, db)
    for call in (
        lambda: posts.find_by(load=load),
        lambda: posts.get_by_id(blog["p1"], load=load),
        lambda: posts.paginate_offset(load=load),
        lambda: posts.paginate_keyset(load=load),
    ):
        await refused(db, call, fragment)


# -- where= -------------------------------------------------------------------------------


@each_case(
    ("where", "fragment"),
    [
        (True, "boolean SQL conditions"),
        (False, "boolean SQL conditions"),
        (Post.id in [1, 2], "boolean SQL conditions"),  # a Python bool
        (1, "boolean SQL conditions"),
        (Post.score + 1, "boolean SQL conditions"),
        (func.lower(Post.title), "boolean SQL conditions"),
        (literal_column("1 = 1", Boolean), "raw SQL"),
        (Post.title == literal_column("'p1'"), "raw SQL"),
        (Writer.username == "jake", "names other table"),
        (Post.writer_id == Writer.id, "names other table"),
        (aliased(Post).score > 1, "names other table"),
        (select(aliased(Post)), "must be select\\(Post\\)"),
        (select(Writer).where(Writer.username == "jake"), "must be select\\(Post\\)"),
        ({"score": 1}, "boolean SQL conditions"),
    ],
)
async def test_hostile_where(
    db: AsyncDatabaseManager, blog: dict[str, Any], where: Any, fragment: str
) -> None:
    posts = Repository(Post, db)
    before = await snapshot(db)
    for call in (
        lambda: posts.find_by(where=where),
        lambda: posts.count(where=where),
        lambda: posts.paginate_offset(where=where),
        lambda: posts.count_by("score", where=where),
        lambda: posts.update_by({"score": 0}, where=where),
        lambda: posts.delete_by(where=where),
    ):
        await refused(db, call, fragment)
    assert await snapshot(db) == before


async def test_where_subqueries_on_other_tables_cannot_revive_rows(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    # A correlated subquery on another table is a self-contained condition: it may
    # narrow the rows, never repeat them nor bring back soft-deleted ones.
    by_jake = Post.writer_id.in_(select(Writer.id).where(Writer.username == "jake"))
    assert [p.title for p in await posts.find_by(where=by_jake)] == ["p1"]
    scalar = select(func.count(Comment.id)).where(Comment.post_id == Post.id).scalar_subquery()
    assert [p.title for p in await posts.find_by(where=scalar >= 0, order_by="title")] == [
        "p1",
        "p2",
        "p3",
    ]
    assert await posts.count(where=true()) == 3
    everything = select(Post).execution_options(include_deleted=True)
    assert await posts.count(where=everything) == 3
    assert await posts.count(where=select(Post).where(Post.deleted_at.is_not(None))) == 0


# -- annotate= ----------------------------------------------------------------------------


@each_case(
    ("annotate", "fragment"),
    [
        ({"title": Count("comments")}, "already an attribute"),
        ({"writer": Count("comments")}, "already an attribute"),
        ({"metadata": Count("comments")}, "already an attribute"),
        ({"registry": Count("comments")}, "already an attribute"),
        ({"deleted_at": Count("comments")}, "already an attribute"),
        ({"__dict__": Count("comments")}, "public identifiers"),
        ({"_sa_instance_state": Count("comments")}, "public identifiers"),
        ({"class": Count("comments")}, "public identifiers"),
        ({"a b": Count("comments")}, "public identifiers"),
        ({"n": Count("password_hash")}, "Unknown relationship 'password_hash'"),
        ({"n": Count("writer", password_hash="h1")}, "password_hash cannot be used"),
        ({"n": Exists("writer", password_hash="h1")}, "password_hash cannot be used"),
        ({"n": Count("writer.posts.writer.posts.writer.posts")}, "deeper than 5"),
        ({"n": Count("")}, "names relationships"),
        ({"n": "comments"}, "must be Count"),
        ({"n": func.count()}, "must be Count"),
        ([("n", Count("comments"))], "mapping of names"),
    ],
)
async def test_hostile_annotate(
    db: AsyncDatabaseManager, blog: dict[str, Any], annotate: Any, fragment: str
) -> None:
    posts = Repository(Post, db)
    for call in (
        lambda: posts.find_by(annotate=annotate),
        lambda: posts.get_by_id(blog["p1"], annotate=annotate),
        lambda: posts.paginate_offset(annotate=annotate),
    ):
        message = await refused(db, call, fragment)
        assert "h1" not in message


async def test_annotations_never_count_through_soft_deleted_rows(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    rows = await posts.find_by(
        order_by="title",
        annotate={
            "siblings": Count("writer.posts"),
            "has_writer": Exists("writer"),
            "comment_writers": Count("comments.writer"),
            "tags_n": Count("tags"),
            "old_tag": Exists("tags", name="old"),
        },
    )
    got = {
        p.title: (p.siblings, p.has_writer, p.comment_writers, p.tags_n, p.old_tag)  # type: ignore[attr-defined]
        for p in rows
    }
    # p3's writer is soft-deleted: no siblings through it, no writer; p4 (deleted) is
    # never a sibling; c3 (deleted) and c4's deleted writer are not counted; nor is "old".
    assert got == {
        "p1": (1, True, 2, 2, False),
        "p2": (1, True, 0, 1, False),
        "p3": (0, False, 0, 0, False),
    }


# -- update_by / delete_by ----------------------------------------------------------------


@each_case(
    ("values", "fragment"),
    [
        ({"id": 99}, "cannot change the primary key"),
        ({"deleted_at": None}, "delete_by|restore"),
        ({"writer": None}, "Unknown field 'writer'"),
        ({"_sa_instance_state": None}, "Unknown field"),
        ({"__class__": None}, "Unknown field"),
        ({"score": "lots"}, "score"),
        ({"score": True}, "score"),
        ({"score": 10**30}, "out of range"),
    ],
)
async def test_hostile_update_by_values(
    db: AsyncDatabaseManager, blog: dict[str, Any], values: dict[str, Any], fragment: str
) -> None:
    posts = Repository(Post, db)
    before = await snapshot(db)
    message = await refused(db, lambda: posts.update_by(values, title="p1"), fragment)
    assert "update_by" in message or "Unknown field" in message or "score" in message
    assert await snapshot(db) == before


async def test_update_by_refuses_the_soft_delete_column_with_directions(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    from asyncdb._models import utcnow

    posts = Repository(Post, db)
    message = await refused(
        db, lambda: posts.update_by({"deleted_at": utcnow()}, title="p1"), "delete_by"
    )
    assert "update_by" in message
    message = await refused(db, lambda: posts.update_by({"id": 7}, title="p1"), "primary key")
    assert "update_by" in message


@pytest.mark.requires("foreign_key_actions")  # DuckDB: rows others refer to
async def test_update_by_writes_secret_columns_without_logging_them(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    writers = Repository(Writer, db)
    # A secret may be written (a new password hash), never used to select rows.
    assert await writers.update_by({"password_hash": "h9"}, username="jake") == 1
    await refused(
        db, lambda: writers.update_by({"username": "x"}, password_hash="h9"), "password_hash"
    )
    await refused(db, lambda: writers.delete_by(password_hash__like="h%"), "password_hash")
    assert (await writers.get(blog["jake"])).password_hash == "h9"


@pytest.mark.requires("foreign_key_actions")  # DuckDB: rows others refer to
async def test_writes_by_filter_with_relations_where_and_with_deleted(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    # relation filter + where + column filter together: all must hold
    assert (
        await posts.update_by(
            {"score": 40}, where=Post.score > 4, tags__name="python", title__like="p%"
        )
        == 1
    )
    assert [p.title for p in await posts.find_by(score=40)] == ["p1"]
    # a relation through a soft-deleted writer never matches, whatever with_deleted says
    assert await posts.delete_by(writer__username="gone") == 0
    assert await posts.delete_by(soft=False, with_deleted=True, writer__username="gone") == 0
    # a hard delete with with_deleted reaches the soft-deleted p4 through a live writer
    deleted = await posts.delete_by(
        soft=False, with_deleted=True, writer__username="jake", score__lt=5
    )
    assert deleted == 1  # p4: soft-deleted itself, its writer live
    assert [p.title for p in await posts.get_all(with_deleted=True, order_by="title")] == [
        "p1",
        "p2",
        "p3",
    ]
    # update_by has no with_deleted: the name is not taken for a column filter silently
    await refused(
        db,
        lambda: posts.update_by({"score": 1}, with_deleted=True, title="p2"),  # type: ignore[call-arg]
        "with_deleted",
    )


async def test_update_by_and_update_audit_the_same_change_alike(db: AsyncDatabaseManager) -> None:
    items = Repository(Item, db)
    one = await items.create(name="one", qty=1, category="x")
    two = await items.create(name="two", qty=1, category="x")
    with audit_context(user_id=7, session_id="s", correlation_id="c"):
        await items.update(one.id, qty=5, category="y")
        assert await items.update_by({"qty": 5, "category": "y"}, id=two.id) == 1
    logs = await get_audit_logs(db, table_name="t_item")
    by_entity = {
        log.entity_id: log
        for log in logs
        if log.action in (AuditAction.UPDATE, AuditAction.BULK_UPDATE)
    }
    single, bulk = by_entity[str(one.id)], by_entity[str(two.id)]
    for field in ("old_values", "new_values", "user_id", "session_id", "correlation_id"):
        assert getattr(single, field) == getattr(bulk, field), field
    assert sorted(single.changed_fields or []) == sorted(bulk.changed_fields or [])
    # Deletes: the action is the bulk one (as bulk_delete writes), the payload the same.
    for soft in (True, False):
        with audit_context(user_id=7, session_id="s", correlation_id="c"):
            await items.delete(one.id, soft=soft)
            assert await items.delete_by(soft=soft, with_deleted=True, id=two.id) == 1
        logs = await get_audit_logs(db, table_name="t_item")
        single = next(log for log in logs if log.entity_id == str(one.id))
        bulk = next(log for log in logs if log.entity_id == str(two.id))
        assert single.action == (AuditAction.SOFT_DELETE if soft else AuditAction.DELETE)
        assert bulk.action == AuditAction.BULK_DELETE
        assert set(single.old_values or {}) == set(bulk.old_values or {})
        assert set(single.new_values or {}) == set(bulk.new_values or {})
        assert (single.new_values is None) == (bulk.new_values is None) == (not soft)
        assert single.changed_fields == bulk.changed_fields
        for field in ("user_id", "session_id", "correlation_id"):
            assert getattr(single, field) == getattr(bulk, field), field
        if soft:
            assert single.old_values == {"deleted_at": None} == bulk.old_values


@pytest.mark.requires("foreign_key_actions")  # DuckDB: rows others refer to
async def test_cache_never_serves_a_row_or_count_from_before_a_write_by_filter(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db, cache=RepositoryCache(ttl=600.0))
    assert (await posts.get(blog["p1"])).score == 5
    assert await posts.count(score=5) == 1
    assert await posts.exists(score=5) is True
    assert await posts.count() == 3
    assert await posts.update_by({"score": 6}, tags__name="db") == 1
    assert (await posts.get(blog["p1"])).score == 6
    assert await posts.count(score=5) == 0
    assert await posts.exists(score=5) is False
    assert await posts.delete_by(where=Post.score == 6) == 1
    assert await posts.get_by_id(blog["p1"]) is None
    assert (await posts.get(blog["p1"], with_deleted=True)).deleted_at is not None
    assert await posts.count() == 2
    assert (await posts.get(blog["p3"])).score == 1
    assert await posts.delete_by(soft=False, with_deleted=True, title="p3") == 1
    assert await posts.get_by_id(blog["p3"], with_deleted=True) is None


# -- paginate_offset ----------------------------------------------------------------------


async def test_paginate_offset_takes_query_string_integers(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    page = await posts.paginate_offset(limit="2", offset="1", order_by="title")  # type: ignore[arg-type]
    assert ([p.title for p in page.items], page.limit, page.offset) == (["p2", "p3"], 2, 1)
    page = await posts.paginate_offset(limit=" 1 ", offset="0")  # type: ignore[arg-type]
    assert (len(page.items), page.total, page.limit, page.offset) == (1, 3, 1, 0)


@each_case(
    ("kwargs", "fragment"),
    [
        ({"limit": -1}, "limit must be an integer between 1 and 100"),
        ({"limit": "-1"}, "limit must be an integer between 1 and 100"),
        ({"limit": "abc"}, "limit must be an integer"),
        ({"limit": ""}, "limit must be an integer"),
        ({"limit": True}, "limit must be an integer"),
        ({"limit": 2.0}, "limit must be an integer"),
        ({"limit": "2.5"}, "limit must be an integer"),
        ({"limit": 0}, "limit must be an integer between 1"),
        ({"limit": 10**6}, "between 1 and 100"),
        ({"limit": None}, "limit must be an integer"),
        ({"offset": -1}, "offset must be an integer"),
        ({"offset": "-1"}, "offset must be an integer"),
        ({"offset": "abc"}, "offset must be an integer"),
        ({"offset": False}, "offset must be an integer"),
        ({"offset": 2**63}, "offset must be an integer"),
        ({"offset": "9" * 5000}, "offset must be an integer"),
        ({"offset": [1]}, "offset must be an integer"),
    ],
)
async def test_hostile_paginate_offset(
    db: AsyncDatabaseManager, blog: dict[str, Any], kwargs: dict[str, Any], fragment: str
) -> None:
    posts = Repository(Post, db)
    message = await refused(db, lambda: posts.paginate_offset(**kwargs), fragment)
    assert len(message) < 300


async def test_paginate_offset_far_beyond_the_end(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)
    with counting(db) as seen:
        page = await posts.paginate_offset(offset=2**63 - 1)
    assert (page.items, page.total, page.has_next, page.has_previous) == ([], 3, False, True)
    assert len(seen) == 1  # the count only: no row query past the end


# -- count_by -----------------------------------------------------------------------------


@each_case(
    ("field", "fragment"),
    [
        ("password_hash", "password_hash cannot be used"),
        ("nope", "Unknown count_by field 'nope'"),
        ("writer", "Unknown count_by field 'writer'"),
        ("writer__username", "Unknown count_by field"),
        ("__class__", "Unknown count_by field"),
        ("metadata", "Unknown count_by field"),
        (5, "Unknown count_by field"),
        (None, "Unknown count_by field"),
    ],
)
async def test_hostile_count_by(
    db: AsyncDatabaseManager, blog: dict[str, Any], field: Any, fragment: str
) -> None:
    writers = Repository(Writer, db)
    message = await refused(db, lambda: writers.count_by(field), fragment)
    assert "h1" not in message


async def test_count_by_keeps_the_repository_allow_list(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db, filterable=["title"])
    await refused(db, lambda: posts.count_by("score"), "score cannot be used")
    assert await posts.count_by("title") == {"p1": 1, "p2": 1, "p3": 1}
    accounts = Repository(Account, db)
    await accounts.create(email="a@x.org", password_hash="s", balance=decimal.Decimal(1))
    await refused(db, lambda: accounts.count_by("password_hash"), "password_hash")
    readers = Repository(Reader, db)
    await refused(db, lambda: readers.count_by("token"), "token cannot be used")


# -- built once, checked every time -------------------------------------------------------


async def test_remembered_annotations_and_loads_never_cross_requests(
    db: AsyncDatabaseManager, blog: dict[str, Any]
) -> None:
    posts = Repository(Post, db)

    async def by(**annotate: Any) -> dict[str, Any]:
        rows = await posts.find_by(order_by="title", annotate=annotate)
        return {p.title: p.flag for p in rows}  # type: ignore[attr-defined]

    for _ in range(2):  # the second round reuses what the first built
        assert await by(flag=Exists("writer", id=blog["jake"])) == {
            "p1": True,
            "p2": False,
            "p3": False,
        }
        assert await by(flag=Exists("writer", id=blog["ann"])) == {
            "p1": False,
            "p2": True,
            "p3": False,
        }
        assert await by(flag=Count("comments", body__in=["c1", "c2"])) == {
            "p1": 2,
            "p2": 0,
            "p3": 0,
        }
        # 1 was built; True (a bool for an integer key) is still refused
        await refused(db, lambda: by(flag=Exists("writer", id=True)), "integer")
    # a narrower allow-list gets no column built for the wider one
    await by(flag=Count("writer.posts", score=5))
    narrow = Repository(Post, db, filterable=["title"])
    await refused(
        db,
        lambda: narrow.find_by(annotate={"n": Count("writer.posts", score=5)}),
        "score cannot be used",
    )
    for _ in range(2):
        live = await posts.get(blog["p1"], load="tags")
        assert sorted(t.name for t in live.tags) == ["db", "python"]
        every = await posts.get(blog["p1"], load="tags", with_deleted=True)
        assert sorted(t.name for t in every.tags) == ["db", "old", "python"]
        await refused(db, lambda: posts.find_by(load=["tags", "nope"]), "'nope'")
