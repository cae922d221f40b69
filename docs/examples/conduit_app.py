"""Conduit (the "RealWorld" Medium clone API) on asyncdb, with no hand-written SQL.

Users register and log in, follow each other, write articles with tags, favourite them,
read a feed of the authors they follow, and comment. Everything goes through the
repository, the unit of work and ``asyncdb.fastapi``:

* relationships are loaded with ``load=`` (the author joined, the tags in one
  ``SELECT ... IN``), never lazily;
* filters go through relationships (``tags__name=``, ``author__username=``,
  ``favorited_by__username=``, the feed's ``author__followers__id=``), each one EXISTS;
* favourite counts and the "favourited" / "following" flags are ``annotate=`` columns of
  the same row query;
* lists are ``paginate_offset(limit=, offset=)``: the API's ``?limit=&offset=`` with the
  total, the limit capped and checked (``?limit=-1`` is a 422, not a 500);
* unfollow and unfavourite are ``delete_by``; articles and comments are soft-deleted.

A page of 20 articles with their authors, following flags, tags, favourite counts and
favourited flags costs three statements: the total, the rows, the tags.

Run it with ``python docs/examples/conduit_app.py`` (``ASYNCDB_URL`` picks the database);
its tests, ``test_conduit_app.py`` beside it, check every endpoint and its statement count.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import Column, ForeignKey, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from asyncdb import (
    Audited,
    Base,
    Count,
    Exists,
    Repository,
    SoftDeleteMixin,
    TimestampMixin,
    get_db_manager,
    init_database,
)
from asyncdb.fastapi import AuditMiddleware, Dependencies, install_error_handlers, lifespan

# -- models ------------------------------------------------------------------------------


class Follow(Base):
    __tablename__ = "conduit_follow"
    follower_id: Mapped[int] = mapped_column(
        ForeignKey("conduit_user.id", ondelete="CASCADE"), primary_key=True
    )
    followed_id: Mapped[int] = mapped_column(
        ForeignKey("conduit_user.id", ondelete="CASCADE"), primary_key=True
    )


class Favorite(Base):
    __tablename__ = "conduit_favorite"
    user_id: Mapped[int] = mapped_column(
        ForeignKey("conduit_user.id", ondelete="CASCADE"), primary_key=True
    )
    article_id: Mapped[int] = mapped_column(
        ForeignKey("conduit_article.id", ondelete="CASCADE"), primary_key=True
    )


article_tags = Table(
    "conduit_article_tag",
    Base.metadata,
    Column("article_id", ForeignKey("conduit_article.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("conduit_tag.id", ondelete="CASCADE"), primary_key=True),
)


class User(Base, TimestampMixin, Audited):
    __tablename__ = "conduit_user"
    __audit_exclude__ = frozenset({"password_hash"})  # never logged, never filterable
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    bio: Mapped[str] = mapped_column(Text, default="")
    image: Mapped[str | None] = mapped_column(String(500), default=None)
    followers: Mapped[list[User]] = relationship(
        secondary="conduit_follow",
        primaryjoin="User.id == Follow.followed_id",
        secondaryjoin="User.id == Follow.follower_id",
        viewonly=True,
    )


class Tag(Base):
    __tablename__ = "conduit_tag"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    articles: Mapped[list[Article]] = relationship(secondary=article_tags, viewonly=True)


class Article(Base, TimestampMixin, SoftDeleteMixin, Audited):
    __tablename__ = "conduit_article"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(250), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(500), default="")
    body: Mapped[str] = mapped_column(Text)
    author_id: Mapped[int] = mapped_column(ForeignKey("conduit_user.id"))
    author: Mapped[User] = relationship()
    tags: Mapped[list[Tag]] = relationship(secondary=article_tags, order_by=Tag.name)
    favorited_by: Mapped[list[User]] = relationship(secondary="conduit_favorite", viewonly=True)


class Comment(Base, TimestampMixin, SoftDeleteMixin, Audited):
    __tablename__ = "conduit_comment"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    article_id: Mapped[int] = mapped_column(ForeignKey("conduit_article.id"))
    author_id: Mapped[int] = mapped_column(ForeignKey("conduit_user.id"))
    author: Mapped[User] = relationship()
    article: Mapped[Article] = relationship()


# -- auth: salted PBKDF2 password hashes, HMAC-signed tokens (stdlib only) ----------------

SECRET = os.environ.get("CONDUIT_SECRET", "change-me").encode()
ITERATIONS = 100_000


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, ITERATIONS)
    return f"{salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    salt, _, digest = stored.partition("$")
    again = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), ITERATIONS)
    return hmac.compare_digest(again.hex(), digest)


def make_token(user_id: int) -> str:
    body = str(user_id).encode()
    mac = hmac.new(SECRET, body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(body).decode() + "." + base64.urlsafe_b64encode(mac).decode()


def token_user(authorization: Annotated[str | None, Header()] = None) -> int | None:
    """The user id in ``Authorization: Token <token>`` (None when there is no header)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    try:
        user_id = int(base64.urlsafe_b64decode(token.partition(".")[0]))
    except ValueError:
        user_id = 0
    # the whole token must be the one we would issue: no trailing bytes, no other scheme
    if scheme not in ("Token", "Bearer") or not hmac.compare_digest(token, make_token(user_id)):
        raise HTTPException(status_code=401, detail="Invalid token.")
    return user_id


def required_user(user_id: Annotated[int | None, Depends(token_user)]) -> int:
    if user_id is None:
        raise HTTPException(status_code=401, detail="Log in first.")
    return user_id


Me = Annotated[int | None, Depends(token_user)]
LoggedIn = Annotated[int, Depends(required_user)]

# -- wiring ------------------------------------------------------------------------------

deps = Dependencies(user_id=token_user)  # audit rows carry the acting user's id
Users = Annotated[Repository[User], Depends(deps.repository(User))]
ReadUsers = Annotated[Repository[User], Depends(deps.repository(User, read_only=True))]
Articles = Annotated[Repository[Article], Depends(deps.repository(Article))]
ReadArticles = Annotated[Repository[Article], Depends(deps.repository(Article, read_only=True))]
Comments = Annotated[Repository[Comment], Depends(deps.repository(Comment))]
ReadComments = Annotated[Repository[Comment], Depends(deps.repository(Comment, read_only=True))]
Tags = Annotated[Repository[Tag], Depends(deps.repository(Tag))]
ReadTags = Annotated[Repository[Tag], Depends(deps.repository(Tag, read_only=True))]
Follows = Annotated[Repository[Follow], Depends(deps.repository(Follow))]
Favorites = Annotated[Repository[Favorite], Depends(deps.repository(Favorite))]


@contextlib.asynccontextmanager
async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with lifespan()(app):
        db = get_db_manager()
        await init_database(db)
        async with db.engine.begin() as conn:  # the app's tables: use Alembic in real apps
            await conn.run_sync(Base.metadata.create_all)
        yield


app = FastAPI(title="Conduit", lifespan=app_lifespan)
app.add_middleware(AuditMiddleware)
install_error_handlers(app)  # ConflictError -> 409 (a taken username), ValidationError -> 422

# -- views -------------------------------------------------------------------------------

ARTICLE_LOADS = ["author", "tags"]


def article_flags(me: int | None) -> dict[str, Count | Exists]:
    """Per-row columns of an article query; the flags only for a logged-in reader."""
    flags: dict[str, Count | Exists] = {"favorites_count": Count("favorited_by")}
    if me is not None:
        flags["favorited"] = Exists("favorited_by", id=me)
        flags["following"] = Exists("author.followers", id=me)
    return flags


def author_flags(me: int | None) -> dict[str, Count | Exists]:
    return {} if me is None else {"following": Exists("author.followers", id=me)}


def profile(user: User, following: bool) -> dict[str, Any]:
    return {
        "username": user.username,
        "bio": user.bio,
        "image": user.image,
        "following": following,
    }


def stamp(value: dt.datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def article_view(article: Article) -> dict[str, Any]:
    return {
        "slug": article.slug,
        "title": article.title,
        "description": article.description,
        "body": article.body,
        "tagList": [tag.name for tag in article.tags],
        "createdAt": stamp(article.created_at),
        "updatedAt": stamp(article.updated_at),
        "favorited": getattr(article, "favorited", False),
        "favoritesCount": getattr(article, "favorites_count", 0),
        "author": profile(article.author, getattr(article, "following", False)),
    }


def comment_view(comment: Comment) -> dict[str, Any]:
    return {
        "id": comment.id,
        "body": comment.body,
        "createdAt": stamp(comment.created_at),
        "updatedAt": stamp(comment.updated_at),
        "author": profile(comment.author, getattr(comment, "following", False)),
    }


def user_view(user: User) -> dict[str, Any]:
    return {
        "user": {
            "email": user.email,
            "token": make_token(user.id),
            "username": user.username,
            "bio": user.bio,
            "image": user.image,
        }
    }


async def one_article(articles: Repository[Article], slug: str, me: int | None) -> Article:
    found = await articles.find_one_by(slug=slug, load=ARTICLE_LOADS, annotate=article_flags(me))
    if found is None:
        raise HTTPException(status_code=404, detail=f"No article {slug!r}.")
    return found


async def article_id(articles: Repository[Article], slug: str, author: int | None = None) -> int:
    found = await articles.find_one_by(slug=slug)
    if found is None:
        raise HTTPException(status_code=404, detail=f"No article {slug!r}.")
    if author is not None and found.author_id != author:
        raise HTTPException(status_code=403, detail="Only the author may change an article.")
    return found.id


async def user_id_of(users: Repository[User], username: str) -> int:
    found = await users.find_one_by(username=username)
    if found is None:
        raise HTTPException(status_code=404, detail=f"No user {username!r}.")
    return found.id


# -- users -------------------------------------------------------------------------------


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=50)
    email: str = Field(min_length=3, max_length=200)
    password: str = Field(min_length=8)


class Login(BaseModel):
    email: str
    password: str


class UserChanges(BaseModel):
    email: str | None = None
    username: str | None = None
    password: str | None = Field(default=None, min_length=8)
    bio: str | None = None
    image: str | None = None


@app.post("/api/users", status_code=201)
async def register(user: Annotated[NewUser, Body(embed=True)], users: Users) -> dict[str, Any]:
    created = await users.create(
        username=user.username, email=user.email, password_hash=hash_password(user.password)
    )
    return user_view(created)


@app.post("/api/users/login")
async def login(user: Annotated[Login, Body(embed=True)], users: ReadUsers) -> dict[str, Any]:
    credentials = user
    found = await users.find_one_by(email=credentials.email)
    if found is None or not check_password(credentials.password, found.password_hash):
        raise HTTPException(status_code=401, detail="Wrong e-mail or password.")
    return user_view(found)


@app.get("/api/user")
async def current(me: LoggedIn, users: ReadUsers) -> dict[str, Any]:
    return user_view(await users.get(me))


@app.put("/api/user")
async def update_user(
    user: Annotated[UserChanges, Body(embed=True)], me: LoggedIn, users: Users
) -> dict[str, Any]:
    changes = user.model_dump(exclude_none=True)
    if "password" in changes:
        changes["password_hash"] = hash_password(changes.pop("password"))
    return user_view(await users.update(me, **changes))


# -- profiles ----------------------------------------------------------------------------


@app.get("/api/profiles/{username}")
async def get_profile(username: str, me: Me, users: ReadUsers) -> dict[str, Any]:
    flags = {} if me is None else {"following": Exists("followers", id=me)}
    found = await users.find_one_by(username=username, annotate=flags)
    if found is None:
        raise HTTPException(status_code=404, detail=f"No user {username!r}.")
    return {"profile": profile(found, getattr(found, "following", False))}


@app.post("/api/profiles/{username}/follow")
async def follow(username: str, me: LoggedIn, users: Users, follows: Follows) -> dict[str, Any]:
    target = await users.find_one_by(username=username)
    if target is None:
        raise HTTPException(status_code=404, detail=f"No user {username!r}.")
    if not await follows.exists(follower_id=me, followed_id=target.id):
        await follows.create(follower_id=me, followed_id=target.id)
    return {"profile": profile(target, True)}


@app.delete("/api/profiles/{username}/follow")
async def unfollow(username: str, me: LoggedIn, users: Users, follows: Follows) -> dict[str, Any]:
    target = await users.find_one_by(username=username)
    if target is None:
        raise HTTPException(status_code=404, detail=f"No user {username!r}.")
    await follows.delete_by(follower_id=me, followed_id=target.id)
    return {"profile": profile(target, False)}


# -- articles ----------------------------------------------------------------------------


@app.get("/api/articles")
async def list_articles(
    me: Me,
    articles: ReadArticles,
    tag: str | None = None,
    author: str | None = None,
    favorited: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    if tag is not None:
        filters["tags__name"] = tag
    if author is not None:
        filters["author__username"] = author
    if favorited is not None:
        filters["favorited_by__username"] = favorited
    page = await articles.paginate_offset(
        limit=limit,
        offset=offset,
        order_by=["-created_at", "-id"],
        load=ARTICLE_LOADS,
        annotate=article_flags(me),
        **filters,
    )
    return {"articles": [article_view(a) for a in page.items], "articlesCount": page.total}


@app.get("/api/articles/feed")
async def feed(
    me: LoggedIn, articles: ReadArticles, limit: int = 20, offset: int = 0
) -> dict[str, Any]:
    page = await articles.paginate_offset(
        limit=limit,
        offset=offset,
        order_by=["-created_at", "-id"],
        load=ARTICLE_LOADS,
        annotate=article_flags(me),
        author__followers__id=me,
    )
    return {"articles": [article_view(a) for a in page.items], "articlesCount": page.total}


@app.get("/api/articles/{slug}")
async def get_article(slug: str, me: Me, articles: ReadArticles) -> dict[str, Any]:
    return {"article": article_view(await one_article(articles, slug, me))}


class NewArticle(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=500)
    body: str
    tagList: list[str] = Field(default_factory=list, max_length=20)  # the API's name


class ArticleChanges(BaseModel):
    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=500)
    body: str | None = None


def slugify(title: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:200] or "article"
    return f"{words}-{secrets.token_hex(3)}"


@app.post("/api/articles", status_code=201)
async def create_article(
    article: Annotated[NewArticle, Body(embed=True)], me: LoggedIn, articles: Articles, tags: Tags
) -> dict[str, Any]:
    new = article
    names = sorted(set(new.tagList))
    known = await tags.find_by(name__in=names) if names else []
    missing = sorted(set(names) - {t.name for t in known})
    if missing:
        await tags.bulk_create([{"name": name} for name in missing])
        known = await tags.find_by(name__in=names)
    row = Article(
        slug=slugify(new.title),
        title=new.title,
        description=new.description,
        body=new.body,
        author_id=me,
        tags=known,
    )
    created = await articles.create(row)
    return {"article": article_view(await one_article(articles, created.slug, me))}


@app.put("/api/articles/{slug}")
async def update_article(
    slug: str,
    article: Annotated[ArticleChanges, Body(embed=True)],
    me: LoggedIn,
    articles: Articles,
) -> dict[str, Any]:
    changes = article.model_dump(exclude_none=True)
    ident = await article_id(articles, slug, author=me)
    if changes:
        await articles.update(ident, **changes)
    return {"article": article_view(await one_article(articles, slug, me))}


@app.delete("/api/articles/{slug}", status_code=204)
async def delete_article(slug: str, me: LoggedIn, articles: Articles) -> None:
    await articles.delete(await article_id(articles, slug, author=me))  # soft


@app.post("/api/articles/{slug}/favorite")
async def favorite(
    slug: str, me: LoggedIn, articles: Articles, favorites: Favorites
) -> dict[str, Any]:
    ident = await article_id(articles, slug)
    if not await favorites.exists(user_id=me, article_id=ident):
        await favorites.create(user_id=me, article_id=ident)
    return {"article": article_view(await one_article(articles, slug, me))}


@app.delete("/api/articles/{slug}/favorite")
async def unfavorite(
    slug: str, me: LoggedIn, articles: Articles, favorites: Favorites
) -> dict[str, Any]:
    await favorites.delete_by(user_id=me, article_id=await article_id(articles, slug))
    return {"article": article_view(await one_article(articles, slug, me))}


# -- comments and tags -------------------------------------------------------------------


class NewComment(BaseModel):
    body: str = Field(min_length=1)


@app.get("/api/articles/{slug}/comments")
async def list_comments(
    slug: str, me: Me, articles: ReadArticles, comments: ReadComments
) -> dict[str, Any]:
    await article_id(articles, slug)  # 404 for an unknown or deleted article
    found = await comments.find_by(
        article__slug=slug, order_by="id", load="author", annotate=author_flags(me)
    )
    return {"comments": [comment_view(c) for c in found]}


@app.post("/api/articles/{slug}/comments", status_code=201)
async def add_comment(
    slug: str,
    comment: Annotated[NewComment, Body(embed=True)],
    me: LoggedIn,
    articles: Articles,
    comments: Comments,
) -> dict[str, Any]:
    new = comment
    ident = await article_id(articles, slug)
    created = await comments.create(body=new.body, article_id=ident, author_id=me)
    return {"comment": comment_view(await comments.get(created.id, load="author"))}


@app.delete("/api/articles/{slug}/comments/{comment_id}", status_code=204)
async def delete_comment(slug: str, comment_id: int, me: LoggedIn, comments: Comments) -> None:
    found = await comments.find_one_by(id=comment_id, article__slug=slug)
    if found is None:
        raise HTTPException(status_code=404, detail=f"No comment {comment_id} on {slug!r}.")
    if found.author_id != me:
        raise HTTPException(status_code=403, detail="Only the author may delete a comment.")
    await comments.delete(comment_id)  # soft


@app.get("/api/tags")
async def list_tags(tags: ReadTags) -> dict[str, list[str]]:
    # tags of at least one live article (a relation filter: one EXISTS)
    return {"tags": [t.name for t in await tags.find_by(order_by="name", articles__id__gt=0)]}


def main() -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)


if __name__ == "__main__":
    main()
