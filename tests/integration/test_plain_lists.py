"""Standalone list reads of a plain model read Core rows (asyncdb._plain_load):
``paginate``, ``find_by`` (and ``list``/``find_one_by`` through it), ``paginate_keyset``.

Each must return what the ORM path returns, for every filter form (keyword filters,
relation filters, ``where=`` conditions), ordering, soft-deleted rows in or out, pages
past the end; the instances detached as the ORM leaves them; anything the plain path
cannot do (``load=``, ``annotate=``, a caller's session) still goes through the ORM.
"""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import inspect

from asyncdb import AsyncDatabaseManager, AsyncUnitOfWork, Page, Repository
from asyncdb._aggregates import Count
from asyncdb._plain_load import plain_loader
from asyncdb._repository_base import _MAX_PAGE_FORMS
from tests.cases import each_case
from tests.integration.models import Post
from tests.integration.test_loading import seed_blog
from tests.integration.test_repository import counting


def _values(items: list[Any]) -> list[dict[str, Any]]:
    columns = [a.key for a in inspect(Post).column_attrs]
    return [{c: getattr(p, c) for c in columns} for p in items]


def _rows(page: Page[Any]) -> tuple[int, list[dict[str, Any]]]:
    return page.total, _values(page.items)


CASES: list[dict[str, Any]] = [
    {},
    {"order_by": "-score"},
    {"order_by": ["title"], "with_deleted": True},
    {"page": 2, "page_size": 2, "order_by": "title"},
    {"page": 9, "page_size": 2},  # past the end: no rows, the total still counted
    {"page": 10**8, "page_size": 100},  # an offset past 2**31 (a 32-bit parameter refused it)
    {"page": 2**50, "page_size": 100},
    {"writer__username": "jake"},  # through a relationship
    {"tags__name": "python", "order_by": "-id"},  # through a many-to-many
    {"score__gte": 3},
    {"where": Post.score > 2},
    {"title": "nothing"},  # total 0: the page query is not sent
]


@each_case("case", CASES)
async def test_same_page_as_the_orm(
    db: AsyncDatabaseManager, blog: dict[str, Any], plain_built: list[Any], case: dict[str, Any]
) -> None:
    plain_built.clear()
    mine = await Repository(Post, db).paginate(**case)
    assert plain_built == list(mine.items)
    async with AsyncUnitOfWork(db) as uow:  # a unit's session: the ORM path
        theirs = await uow.get_repository(Post).paginate(**case)
        assert _rows(mine) == _rows(theirs)
    assert (mine.page, mine.page_size) == (theirs.page, theirs.page_size)
    for post in mine.items:
        state = inspect(post)
        assert state.detached and not state.modified and not state.expired_attributes
        assert {"writer", "tags", "comments", "liked_by"} <= state.unloaded


async def test_statements_of_a_plain_page(db: AsyncDatabaseManager, plain_built: list[Any]) -> None:
    await seed_blog(db)
    posts = Repository(Post, db)
    with counting(db) as seen:
        page = await posts.paginate(page_size=2, order_by="-score")
        empty = await posts.paginate(title="nothing")
    assert [p.title for p in page.items] == ["p1", "p2"] and page.total == 3
    assert empty.total == 0 and empty.items == []
    assert len(seen) == 3  # count + page, then a count alone
    assert "count(*)" in seen[0].lower() and "deleted_at IS NULL" in seen[1]


async def test_load_and_annotate_keep_the_orm(
    db: AsyncDatabaseManager, plain_built: list[Any]
) -> None:
    await seed_blog(db)
    posts = Repository(Post, db)
    loaded = await posts.paginate(load="writer", order_by="title")
    assert loaded.items[0].writer.username == "jake"
    counted = await posts.paginate(annotate={"n": Count("comments")}, order_by="title")
    assert [p.n for p in counted.items] == [2, 1, 0]  # type: ignore[attr-defined]
    assert plain_built == []


async def test_unfiltered_statements_are_built_once_and_bounded(
    db: AsyncDatabaseManager, plain_built: list[Any]
) -> None:
    """Pages without filters reuse their statements (limit and offset are bound); the
    orderings a caller may send cannot grow that store without bound."""
    await seed_blog(db)
    posts = Repository(Post, db)
    loader = plain_loader(inspect(Post))
    assert loader is not None
    loader.pages.clear()
    first = await posts.paginate(page=1, page_size=2, order_by="-score")
    second = await posts.paginate(page=2, page_size=2, order_by="-score")
    assert [p.title for p in first.items + second.items] == ["p1", "p2", "p3"]
    assert len(loader.pages) == 1
    await posts.paginate(order_by="-score", title="p1")  # filtered: not stored
    assert len(loader.pages) == 1

    fields = sorted(posts.filterable)
    orders = [
        [f"{'-' if d1 else ''}{a}", f"{'-' if d2 else ''}{b}"]
        for a, b in itertools.permutations(fields, 2)
        for d1 in (False, True)
        for d2 in (False, True)
    ][: _MAX_PAGE_FORMS + 2]
    assert len(orders) == _MAX_PAGE_FORMS + 2
    for order in orders:  # what a page would store, without sending each page
        posts._plain_page_statements(loader, {}, False, None, order)
    sample = [orders[0], orders[_MAX_PAGE_FORMS // 2], *orders[-2:]]  # the last two: not kept
    mine = [_rows(await posts.paginate(order_by=order, page_size=2)) for order in sample]
    async with AsyncUnitOfWork(db) as uow:  # the task's unit: its reads join it
        orm = uow.get_repository(Post)
        theirs = [_rows(await orm.paginate(order_by=order, page_size=2)) for order in sample]
    assert mine == theirs
    assert len(loader.pages) == _MAX_PAGE_FORMS


FIND_CASES: list[dict[str, Any]] = [
    {},
    {"order_by": "-score", "limit": 2},
    {"order_by": "title", "offset": 1, "with_deleted": True},
    {"tags__name": "python"},
    {"where": [Post.score > 0], "writer__username": "jake"},
    {"limit": 0},
]


@each_case("case", FIND_CASES)
async def test_find_by_same_rows_as_the_orm(
    db: AsyncDatabaseManager, blog: dict[str, Any], plain_built: list[Any], case: dict[str, Any]
) -> None:
    plain_built.clear()
    mine = await Repository(Post, db).find_by(**case)
    assert plain_built == mine
    async with AsyncUnitOfWork(db) as uow:
        theirs = await uow.get_repository(Post).find_by(**case)
        assert _values(mine) == _values(theirs)


KEYSET_CASES: list[tuple[Any, bool]] = [
    ("id", False),
    ("-id", False),
    ("-score", False),
    (["title", "-id"], False),
    ("deleted_at", True),  # nullable: cursors with and without a NULL value
    (["-deleted_at", "score"], True),
]


@each_case("order_by, with_deleted", KEYSET_CASES)
async def test_keyset_walk_same_as_the_orm(
    db: AsyncDatabaseManager,
    blog: dict[str, Any],
    plain_built: list[Any],
    order_by: Any,
    with_deleted: bool,
) -> None:
    plain_built.clear()

    async def walk(repo: Repository[Post]) -> list[tuple[list[int], str | None]]:
        pages, after = [], None
        while True:
            page = await repo.paginate_keyset(
                after=after, limit=1, order_by=order_by, with_deleted=with_deleted
            )
            pages.append(([p.id for p in page.items], page.next_cursor))
            if not page.has_more:
                return pages
            after = page.next_cursor

    mine = await walk(Repository(Post, db))
    rows = 4 if with_deleted else 3
    assert len(mine) == rows and len(plain_built) == 2 * (rows - 1) + 1  # limit + 1 a page
    async with AsyncUnitOfWork(db) as uow:
        assert mine == await walk(uow.get_repository(Post))
    loader = plain_loader(inspect(Post))
    assert loader is not None and 0 < len(loader.keysets) <= _MAX_PAGE_FORMS
