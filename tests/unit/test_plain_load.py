"""Which models standalone reads may build from Core rows (asyncdb._plain_load).

The integration tests (test_reads_by_id.py, test_plain_lists.py) compare the plain path
with the ORM's on every backend; these pin the verdicts themselves, without a database.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, ForeignKey, Integer, String, Table, inspect
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    column_property,
    composite,
    deferred,
    mapped_column,
    reconstructor,
    relationship,
    synonym,
)

from asyncdb._plain_load import _READ_EVENTS, plain_loader
from asyncdb._session import ToolkitSession


class _Base(DeclarativeBase):
    pass


class Plain(_Base):
    __tablename__ = "u_plain"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column("label", String(20))  # renamed column: still plain
    others: Mapped[list[Other]] = relationship(lazy="raise", viewonly=True)


class Other(_Base):
    __tablename__ = "u_other"
    id: Mapped[int] = mapped_column(primary_key=True)
    plain_id: Mapped[int] = mapped_column(ForeignKey("u_plain.id"))
    plain: Mapped[Plain] = relationship(lazy="selectin")  # eager: not plain


class Deferred(_Base):
    __tablename__ = "u_deferred"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = deferred(mapped_column(String(20)))


class Computed(_Base):
    __tablename__ = "u_computed"
    id: Mapped[int] = mapped_column(primary_key=True)
    a: Mapped[int] = mapped_column()
    double: Mapped[int] = column_property(a * 2)


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __composite_values__(self) -> tuple[int, int]:
        return self.x, self.y


class WithComposite(_Base):
    __tablename__ = "u_composite"
    id: Mapped[int] = mapped_column(primary_key=True)
    x: Mapped[int] = mapped_column()
    y: Mapped[int] = mapped_column()
    point: Mapped[Point] = composite(Point, "x", "y")


class WithSynonym(_Base):
    __tablename__ = "u_synonym"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
    title: Mapped[str] = synonym("name")


class Shape(_Base):
    __tablename__ = "u_shape"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "shape"}


class Circle(Shape):
    __mapper_args__ = {"polymorphic_identity": "circle"}


_VIEW = Table("u_view", _Base.metadata, Column("grp", Integer), Column("n", Integer))


class View(_Base):
    """A mapper key of its own over a table without one: rows may repeat or be NULL."""

    __table__ = _VIEW
    __mapper_args__ = {"primary_key": [_VIEW.c.grp]}


class Rebuilt(_Base):
    __tablename__ = "u_rebuilt"
    id: Mapped[int] = mapped_column(primary_key=True)

    @reconstructor
    def _loaded(self) -> None:
        self.seen = True


def test_verdicts() -> None:
    loader = plain_loader(inspect(Plain))
    assert loader is not None
    assert loader.keys == ("id", "name") and [c.name for c in loader.columns] == ["id", "label"]
    obj = loader.instance((3, "x"))
    state = inspect(obj)
    assert state.detached and state.key == (Plain, (3,), None) and obj.name == "x"
    assert not state.modified and not state.expired_attributes
    for model in (Other, Deferred, Computed, WithComposite, WithSynonym, Shape, Circle, View):
        assert plain_loader(inspect(model)) is None, model.__name__
    # A reconstructor runs on every ORM load: it is a load listener, so reads keep the ORM.
    rebuilt = plain_loader(inspect(Rebuilt))
    assert rebuilt is not None and not rebuilt.usable()


def test_a_property_added_later_is_seen() -> None:
    class Base(DeclarativeBase):
        pass

    class Parent(Base):
        __tablename__ = "u_parent"
        id: Mapped[int] = mapped_column(primary_key=True)

    assert plain_loader(inspect(Parent)) is not None

    class Child(Base):  # declared after Parent's first read, with an eager backref
        __tablename__ = "u_child"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int] = mapped_column(ForeignKey("u_parent.id"))
        parent: Mapped[Parent] = relationship(backref=_selectin_backref())

    assert plain_loader(inspect(Parent)) is None


def _selectin_backref() -> Any:
    from sqlalchemy.orm import backref

    return backref("children", lazy="selectin")


def test_asyncdb_listeners_on_read_events_are_known() -> None:
    """asyncdb's own Session listeners on the events an ORM read runs are taken as not
    reading. A new one must be judged: if a plain read should run it, make the plain
    path run it (or refuse it), then add it here."""
    dispatch = ToolkitSession.dispatch
    own = {
        (name, f"{fn.__module__}.{fn.__qualname__}")
        for name in _READ_EVENTS
        for fn in getattr(dispatch, name)._clslevel.get(ToolkitSession, ())
        if fn.__module__.startswith("asyncdb.")
    }
    assert own == {
        ("do_orm_execute", "asyncdb._changes._record_dml"),  # bulk DML only
        ("after_transaction_end", "asyncdb._changes._discard"),  # recorded changes
    }


@pytest.mark.parametrize("model", [Plain])
def test_instances_are_independent(model: type[Any]) -> None:
    loader = plain_loader(inspect(model))
    assert loader is not None
    a, b = loader.instances([(1, "a"), (2, "b")])
    assert (a.id, a.name, b.id, b.name) == (1, "a", 2, "b")
    assert inspect(a).key != inspect(b).key
