"""The "list page with relations" workload: a Conduit article list, three ways.

One page of 20 articles, newest first, each with its author's profile and whether the
reader follows the author, its tags, its favourite count and whether the reader
favourited it — the list endpoint of issue 15's Conduit app. Three implementations:

* ``orm-n+1``: what a user writes today without eager loading: the page, then per
  article the author (``session.get``, so repeated authors come from the identity map),
  the tags, the favourite count and the two flags — about 100 statements a page;
* ``orm``: a hand-written SQLAlchemy version: the total, one row query with the author
  joined and the count and flags as correlated subqueries, one query for the tags;
* ``asyncdb``: ``Repository.paginate_offset(load=..., annotate=...)``.

The models live on the run's own declarative base (see :mod:`._schema`), so the tables
are created, seeded and dropped with the others.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    exists,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from .._aggregates import Count, Exists
from .._repository import Repository

__all__ = ["PAGE", "RelationModels", "asyncdb_page", "make_relation_models", "orm_loop_page"]

#: Articles per page, as the Conduit API's default.
PAGE = 20
#: Tags per article, favourites per article, authors each reader follows (seeded).
_TAGS, _FAVOURITES, _FOLLOWS = 3, 5, 10


@dataclasses.dataclass(frozen=True)
class RelationModels:
    """The run's user, article and tag models and its association tables."""

    user: type[Any]
    article: type[Any]
    tag: type[Any]
    article_tags: Table
    follows: Table
    favorites: Table

    async def seed(self, conn: AsyncConnection, articles: int) -> None:
        """``articles`` articles by ``articles // 5`` users, with tags, favourites, follows."""
        users = max(articles // 5, _FOLLOWS + 1)
        tags = 30
        await conn.execute(
            insert(self.user.__table__),
            [{"username": f"user{i}", "bio": f"bio of user {i}"} for i in range(users)],
        )
        await conn.execute(insert(self.tag.__table__), [{"name": f"tag{i}"} for i in range(tags)])
        start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        await conn.execute(
            insert(self.article.__table__),
            [
                {
                    "title": f"article {i}",
                    "body": f"body of article {i}",
                    "author_id": i % users + 1,
                    "created_at": start + dt.timedelta(minutes=i),
                }
                for i in range(articles)
            ],
        )
        await conn.execute(
            insert(self.article_tags),
            [
                {"article_id": a + 1, "tag_id": (a + k) % tags + 1}
                for a in range(articles)
                for k in range(_TAGS)
            ],
        )
        await conn.execute(
            insert(self.favorites),
            [
                {"article_id": a + 1, "user_id": (a * 7 + k) % users + 1}
                for a in range(articles)
                for k in range(_FAVOURITES)
            ],
        )
        await conn.execute(
            insert(self.follows),
            [
                {"follower_id": u + 1, "followed_id": (u + k + 1) % users + 1}
                for u in range(users)
                for k in range(_FOLLOWS)
            ],
        )


def make_relation_models(base: type[DeclarativeBase], prefix: str) -> RelationModels:
    """The relation models of one run, on its ``base``, tables named ``prefix_r*``."""
    metadata = base.metadata
    user_table, article_table, tag_table = f"{prefix}_ru", f"{prefix}_ra", f"{prefix}_rt"
    follows = Table(
        f"{prefix}_rf",
        metadata,
        Column("follower_id", ForeignKey(f"{user_table}.id"), primary_key=True),
        Column("followed_id", ForeignKey(f"{user_table}.id"), primary_key=True),
    )
    favorites = Table(
        f"{prefix}_rv",
        metadata,
        Column("article_id", ForeignKey(f"{article_table}.id"), primary_key=True),
        Column("user_id", ForeignKey(f"{user_table}.id"), primary_key=True, index=True),
    )
    article_tags = Table(
        f"{prefix}_rat",
        metadata,
        Column("article_id", ForeignKey(f"{article_table}.id"), primary_key=True),
        Column("tag_id", ForeignKey(f"{tag_table}.id"), primary_key=True),
    )

    class RelUser(base):  # type: ignore[misc,valid-type]
        __tablename__ = user_table
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        username: Mapped[str] = mapped_column(String(50))
        bio: Mapped[str] = mapped_column(String(200))

    RelUser.followers = relationship(
        RelUser,
        secondary=follows,
        primaryjoin=RelUser.id == follows.c.followed_id,
        secondaryjoin=RelUser.id == follows.c.follower_id,
        viewonly=True,
    )

    class RelTag(base):  # type: ignore[misc,valid-type]
        __tablename__ = tag_table
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        name: Mapped[str] = mapped_column(String(50))

    class RelArticle(base):  # type: ignore[misc,valid-type]
        __tablename__ = article_table
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        title: Mapped[str] = mapped_column(String(200))
        body: Mapped[str] = mapped_column(String(2000))
        author_id: Mapped[int] = mapped_column(ForeignKey(f"{user_table}.id"), index=True)
        created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
        deleted_at: Mapped[dt.datetime | None] = mapped_column(
            DateTime(timezone=True), default=None
        )
        author = relationship(RelUser)
        tags = relationship(RelTag, secondary=article_tags, order_by=RelTag.name)
        favorited_by = relationship(RelUser, secondary=favorites, viewonly=True)

    return RelationModels(RelUser, RelArticle, RelTag, article_tags, follows, favorites)


def _view(article: Any, author: Any, tags: list[str], count: int, fav: bool, fol: bool) -> Any:
    """What the endpoint serialises (built alike by all three, so all do the same work)."""
    return {
        "title": article.title,
        "tags": tags,
        "favoritesCount": count,
        "favorited": fav,
        "author": {"username": author.username, "bio": author.bio, "following": fol},
    }


def _live(m: RelationModels) -> Any:
    return m.article.deleted_at.is_(None)


def _order(m: RelationModels) -> list[Any]:
    return [m.article.created_at.desc(), m.article.id.desc()]


async def orm_loop_page(session: AsyncSession, m: RelationModels, reader: int, offset: int) -> Any:
    """The N+1 loop: per article, the author, tags, count and flags one by one."""
    a, fav = m.article, m.favorites
    total = await session.scalar(select(func.count()).select_from(a).where(_live(m)))
    stmt = select(a).where(_live(m)).order_by(*_order(m)).limit(PAGE).offset(offset)
    views = []
    for article in (await session.scalars(stmt)).all():
        author = await session.get(m.user, article.author_id)
        tags = await session.scalars(
            select(m.tag.name)
            .join(m.article_tags, m.article_tags.c.tag_id == m.tag.id)
            .where(m.article_tags.c.article_id == article.id)
            .order_by(m.tag.name)
        )
        count = await session.scalar(
            select(func.count()).select_from(fav).where(fav.c.article_id == article.id)
        )
        favorited = await session.scalar(
            select(exists().where(fav.c.article_id == article.id, fav.c.user_id == reader))
        )
        following = await session.scalar(
            select(
                exists().where(
                    m.follows.c.follower_id == reader,
                    m.follows.c.followed_id == article.author_id,
                )
            )
        )
        views.append(
            _view(article, author, list(tags), count or 0, bool(favorited), bool(following))
        )
    return total, views


async def orm_query_page(session: AsyncSession, m: RelationModels, reader: int, offset: int) -> Any:
    """Hand-written: the total, the rows with the author joined and the count and flags
    as correlated subqueries, then the tags of the page in one query."""
    a, fav, fol = m.article, m.favorites, m.follows
    total = await session.scalar(select(func.count()).select_from(a).where(_live(m)))
    count = (
        select(func.count())
        .select_from(fav)
        .where(fav.c.article_id == a.id)
        .correlate(a)
        .scalar_subquery()
    )
    favorited = exists().where(fav.c.article_id == a.id, fav.c.user_id == reader)
    following = exists().where(fol.c.follower_id == reader, fol.c.followed_id == a.author_id)
    stmt = (
        select(a, m.user, count, favorited, following)
        .join(m.user, m.user.id == a.author_id)
        .where(_live(m))
        .order_by(*_order(m))
        .limit(PAGE)
        .offset(offset)
    )
    rows = (await session.execute(stmt)).all()
    tags: dict[int, list[str]] = {row[0].id: [] for row in rows}
    if tags:
        found = await session.execute(
            select(m.article_tags.c.article_id, m.tag.name)
            .join(m.tag, m.tag.id == m.article_tags.c.tag_id)
            .where(m.article_tags.c.article_id.in_(list(tags)))
            .order_by(m.tag.name)
        )
        for article_id, name in found:
            tags[article_id].append(name)
    views = [_view(art, user, tags[art.id], n, bool(f), bool(g)) for art, user, n, f, g in rows]
    return total, views


async def asyncdb_page(repo: Repository[Any], reader: int, offset: int) -> Any:
    """The toolkit: one call."""
    page = await repo.paginate_offset(
        limit=PAGE,
        offset=offset,
        order_by=["-created_at", "-id"],
        load=["author", "tags"],
        annotate={
            "favorites_count": Count("favorited_by"),
            "favorited": Exists("favorited_by", id=reader),
            "following": Exists("author.followers", id=reader),
        },
    )
    views = [
        _view(
            art,
            art.author,
            [t.name for t in art.tags],
            art.favorites_count,
            art.favorited,
            art.following,
        )
        for art in page.items
    ]
    return page.total, views
