"""Static types users see; checked by ``mypy --strict`` (tests/unit/test_typing.py, CI).

Each ``assert_type`` fails the type check if a wrapper erases SQLAlchemy's or the
repository's declared types (e.g. to ``Any``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ForeignKey, Result, ScalarResult, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import Mapped, mapped_column, relationship, selectinload
from typing_extensions import assert_type

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    Base,
    Count,
    Exists,
    KeysetPage,
    OffsetPage,
    Page,
    Repository,
)


class User(Base):
    __tablename__ = "typing_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


async def session_calls(db: AsyncDatabaseManager) -> None:
    async with db.session() as session:
        assert_type(await session.execute(select(User)), Result[User])
        assert_type(await session.scalars(select(User)), ScalarResult[User])
        assert_type(await session.get(User, 1), User | None)
        assert_type(await session.get_one(User, 1), User)
        assert_type(await session.merge(User(name="a")), User)
        rows = (await session.execute(select(User.id, User.name))).all()
        assert_type(rows, Sequence[Row[int, str]])


async def unit_calls(db: AsyncDatabaseManager) -> None:
    async with AsyncUnitOfWork(db) as uow:
        assert_type(await uow.session.execute(select(User)), Result[User])
        assert_type(await uow.session.get(User, 1), User | None)
        users = uow.get_repository(User)
        assert_type(users, Repository[User])


async def repository_calls(db: AsyncDatabaseManager) -> None:
    users = Repository(User, db)
    assert_type(await users.create(name="Ada"), User)
    assert_type(await users.get_by_id(1), User | None)
    assert_type(await users.get(1), User)
    assert_type(await users.update(1, name="Bo"), User)
    assert_type(await users.find_by(name="Ada"), list[User])
    assert_type(await users.find_one_by(name="Ada"), User | None)
    assert_type(await users.count(), int)
    assert_type(await users.exists(name="Ada"), bool)
    assert_type(await users.paginate(page=1), Page[User])
    assert_type(await users.paginate_keyset(limit=10), KeysetPage[User])
    assert_type(await users.upsert({"id": 1, "name": "Ada"}, conflict_on=["id"]), User)


class Author(Base):
    __tablename__ = "typing_authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "typing_books"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("typing_authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


async def relationship_calls(db: AsyncDatabaseManager) -> None:
    books = Repository(Book, db)
    assert_type(await books.get(1, load="author"), Book)
    assert_type(await books.get_by_id(1, load=["author"]), Book | None)
    assert_type(await books.find_by(load=["author", selectinload(Book.author)]), list[Book])
    assert_type(await books.find_one_by(load=("author",), title="x"), Book | None)
    assert_type(await books.get_all(load=["author"]), list[Book])
    assert_type(await books.paginate(load=["author"]), Page[Book])
    assert_type(await books.paginate_keyset(load=["author"]), KeysetPage[Book])
    authors = Repository(Author, db)
    assert_type(await authors.find_by(load="books.author"), list[Author])
    assert_type(await books.find_by(author__name="Ada", author__id__in=[1, 2]), list[Book])
    assert_type(await books.count(author__name__like="A%"), int)
    assert_type(await authors.exists(books__title="x"), bool)
    assert_type(await books.update_by({"title": "y"}, author__name="Ada"), int)
    assert_type(await books.delete_by(title__like="draft%"), int)
    assert_type(await books.delete_by(soft=False, with_deleted=True, allow_all=True), int)
    assert_type(await books.find_by(where=Book.id > 3, title="x"), list[Book])
    assert_type(await books.find_one_by(where=[Book.id > 3, Book.title.ilike("a%")]), Book | None)
    assert_type(await books.count(where=select(Book).join(Book.author)), int)
    assert_type(await books.exists(where=Book.author.has(Author.name == "Ada")), bool)
    assert_type(await books.paginate(page=2, where=Book.id > 3), Page[Book])
    assert_type(await books.paginate_keyset(where=[Book.id > 3]), KeysetPage[Book])
    assert_type(await books.update_by({"title": "z"}, where=Book.id < 3), int)
    assert_type(await books.delete_by(where=Book.id < 3), int)
    favourites = {"n": Count("author"), "mine": Exists("author", id=1)}
    assert_type(await books.find_by(annotate=favourites), list[Book])
    assert_type(await books.get(1, annotate={"n": Count("author")}), Book)
    assert_type(await books.paginate(annotate=favourites, load="author"), Page[Book])
    assert_type(await books.paginate_offset(limit=20, offset=3), OffsetPage[Book])
    assert_type(await books.paginate_offset(annotate=favourites, title="x"), OffsetPage[Book])
    assert_type(await books.count_by("title", where=Book.id > 2), dict[Any, int])
