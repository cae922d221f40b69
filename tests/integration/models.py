"""Models used by the integration tests."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid

from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from asyncdb import Audited, Base, SoftDeleteMixin, TimestampMixin


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(Base, TimestampMixin, SoftDeleteMixin, Audited):
    """Audited, soft-deletable, timestamped: the main test model."""

    __tablename__ = "t_item"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    sku: Mapped[str | None] = mapped_column(String(50), unique=True, default=None)
    qty: Mapped[int] = mapped_column(Integer, default=0)
    category: Mapped[str | None] = mapped_column(String(50), default=None)


class Account(Base, Audited):
    """Audited, hard-delete only, with an excluded secret column."""

    __tablename__ = "t_account"
    __audit_exclude__ = frozenset({"password_hash"})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200), default="")
    balance: Mapped[decimal.Decimal] = mapped_column(Numeric(18, 6), default=decimal.Decimal(0))


class Counter(Base):
    """A plain counter row for concurrency tests (not audited)."""

    __tablename__ = "t_counter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class Kind(Base):
    """Composite-unique rows for upsert tests."""

    __tablename__ = "t_kind"
    __table_args__ = (UniqueConstraint("namespace", "code"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    namespace: Mapped[str] = mapped_column(String(50))
    code: Mapped[str] = mapped_column(String(50))
    label: Mapped[str] = mapped_column(String(100), default="")


class Order(Base, Audited):
    """References Account (foreign-key tests) and carries odd value types (audit JSON)."""

    __tablename__ = "t_order"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("t_account.id"))
    token: Mapped[uuid.UUID | None] = mapped_column(default=None)
    amount: Mapped[decimal.Decimal | None] = mapped_column(Numeric(30, 10), default=None)
    color: Mapped[Color | None] = mapped_column(default=None)
    blob: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    due: Mapped[dt.date | None] = mapped_column(default=None)


class Profile(Base):
    """Declares its own allow-list of filterable fields (``__filterable__``)."""

    __tablename__ = "t_profile"
    __filterable__ = frozenset({"handle", "score"})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    handle: Mapped[str] = mapped_column(String(50))
    score: Mapped[int] = mapped_column(Integer, default=0)
    bio: Mapped[str | None] = mapped_column(String(200), default=None)


# -- a small blog: relationships of every kind (eager loading, relation filters) -------

post_tags = Table(
    "t_blog_post_tag",
    Base.metadata,
    Column("post_id", ForeignKey("t_blog_post.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("t_blog_tag.id", ondelete="CASCADE"), primary_key=True),
)


class Writer(Base, SoftDeleteMixin):
    """Soft-deletable, with a secret column (never filterable, also through a relation)."""

    __tablename__ = "t_blog_writer"
    __audit_exclude__ = frozenset({"password_hash"})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(50), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200), default="")
    posts: Mapped[list[Post]] = relationship(back_populates="writer")


class Tag(Base, SoftDeleteMixin):
    __tablename__ = "t_blog_tag"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    posts: Mapped[list[Post]] = relationship(secondary=post_tags, back_populates="tags")


post_likes = Table(
    "t_blog_like",
    Base.metadata,
    Column("post_id", ForeignKey("t_blog_post.id", ondelete="CASCADE"), primary_key=True),
    Column("reader_id", ForeignKey("t_blog_reader.id", ondelete="CASCADE"), primary_key=True),
)
reader_follows = Table(
    "t_blog_reader_follow",
    Base.metadata,
    Column("follower_id", ForeignKey("t_blog_reader.id", ondelete="CASCADE"), primary_key=True),
    Column("followed_id", ForeignKey("t_blog_reader.id", ondelete="CASCADE"), primary_key=True),
)


class Reader(Base):
    """No soft delete: relations to it take the association-table-only paths."""

    __tablename__ = "t_blog_reader"
    __audit_exclude__ = frozenset({"token"})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    token: Mapped[str] = mapped_column(String(50), default="")
    followers: Mapped[list[Reader]] = relationship(
        secondary=reader_follows,
        primaryjoin=lambda: Reader.id == reader_follows.c.followed_id,
        secondaryjoin=lambda: Reader.id == reader_follows.c.follower_id,
        viewonly=True,
    )


class Post(Base, SoftDeleteMixin, Audited):
    __tablename__ = "t_blog_post"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    writer_id: Mapped[int] = mapped_column(ForeignKey("t_blog_writer.id"))
    score: Mapped[int] = mapped_column(Integer, default=0)
    writer: Mapped[Writer] = relationship(back_populates="posts")
    tags: Mapped[list[Tag]] = relationship(secondary=post_tags, back_populates="posts")
    comments: Mapped[list[Comment]] = relationship(back_populates="post", order_by="Comment.id")
    liked_by: Mapped[list[Reader]] = relationship(secondary=post_likes, viewonly=True)


class Comment(Base, SoftDeleteMixin):
    __tablename__ = "t_blog_comment"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(String(200))
    post_id: Mapped[int] = mapped_column(ForeignKey("t_blog_post.id"))
    writer_id: Mapped[int] = mapped_column(ForeignKey("t_blog_writer.id"))
    post: Mapped[Post] = relationship(back_populates="comments")
    writer: Mapped[Writer] = relationship()
