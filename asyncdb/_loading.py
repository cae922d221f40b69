"""Eager loading: the ``load=`` argument of every repository read, checked against the mapper.

``load`` names relationships, dotted for nesting (``"writer"``, ``"tags"``,
``"comments.writer"``), and may mix in SQLAlchemy loader options for full control
(``selectinload(Post.comments).joinedload(Comment.writer)``). Each name is checked
against the mapper before any SQL: an unknown one is a :class:`ValidationError`.

The strategy follows the relationship's kind:

* a collection (one-to-many, many-to-many) is loaded with ``selectinload``: one extra
  ``SELECT ... WHERE key IN (...)`` per relationship and page, no duplicated rows, and
  LIMIT/OFFSET stay on the parent query;
* a scalar (many-to-one, one-to-one) is loaded with ``joinedload``: a LEFT OUTER JOIN in
  the same statement. One row per parent, so no extra round trip and no duplication.

Soft-deleted related rows are left out of every relationship loaded by name (the
collection does not hold them, a many-to-one target is None), through
``with_loader_criteria``, unless the read passes ``with_deleted=True``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import (
    Load,
    RelationshipProperty,
    joinedload,
    selectinload,
    with_loader_criteria,
)
from sqlalchemy.orm.interfaces import ORMOption

from ._errors import ValidationError
from ._model_info import model_info

__all__ = ["LoadArg", "loader_options", "relationship_of", "split_path"]

#: What ``load=`` accepts: one relationship path, or a sequence of paths and options.
LoadArg = str | Sequence[str | ORMOption] | None

#: Paths deeper than this are refused: a caller's ``a.b.a.b...`` is not a query plan.
MAX_DEPTH = 5


def relationship_of(model: type[Any], name: object, *, what: str) -> RelationshipProperty[Any]:
    """The relationship ``name`` of ``model``; :class:`ValidationError` when there is none."""
    relationships = model_info(model).mapper.relationships
    if isinstance(name, str) and name in relationships:
        prop: RelationshipProperty[Any] = relationships[name]
        return prop
    known = ", ".join(sorted(relationships.keys())) or "none"
    msg = f"Unknown relationship {name!r} in {what} for {model.__name__}. Use one of: {known}."
    raise ValidationError(msg)


def split_path(path: str, what: str) -> list[str]:
    """The relationship names of a dotted ``path``; :class:`ValidationError` when it is
    deeper than :data:`MAX_DEPTH` (``what`` names the argument in the message)."""
    names = path.split(".")
    if len(names) > MAX_DEPTH:
        msg = f"{what} {path!r} is deeper than {MAX_DEPTH} relationships."
        raise ValidationError(msg)
    return names


def _check_option(model: type[Any], option: ORMOption) -> ORMOption:
    """A loader option must start at ``model``: SQLAlchemy would only refuse it while
    compiling the statement, with an error of its own."""
    path = option.path if isinstance(option, Load) else None
    root = getattr(path[0], "mapper", None) if path else None
    mapper = model_info(model).mapper
    if root is not None and not (root.isa(mapper) or mapper.isa(root)):
        msg = (
            f"A loader option in load= starts at {root.class_.__name__}, not at "
            f"{model.__name__}: start it at a relationship of {model.__name__} "
            f"(selectinload({model.__name__}.<relationship>)...) or name the path in "
            "load= ('comments.author')."
        )
        raise ValidationError(msg)
    return option


def _not_deleted(cls: Any) -> Any:
    return cls.deleted_at.is_(None)


def loader_options(model: type[Any], load: LoadArg, with_deleted: bool) -> list[ORMOption]:
    """The ORM options for ``load`` (see the module docstring); [] for None."""
    if load is None:
        return []
    cls: Any = model  # hashable, though mypy does not see a class as such
    if isinstance(load, str):
        return list(_named_options(cls, (load,), with_deleted))
    if isinstance(load, (list, tuple)) and all(type(item) is str for item in load):
        # Names only: built and checked once (options are immutable), as a page
        # endpoint asks for the same loads on every request.
        return list(_named_options(cls, tuple(load), with_deleted))
    return _options(model, load, with_deleted)


@functools.lru_cache(maxsize=256)
def _named_options(
    model: Any,  # a class (typed Any: mypy does not see a class as Hashable)
    names: tuple[str, ...],
    with_deleted: bool,
) -> tuple[ORMOption, ...]:
    return tuple(_options(model, names, with_deleted))


def _options(model: type[Any], load: Any, with_deleted: bool) -> list[ORMOption]:
    items: Sequence[Any] = load
    if not isinstance(items, (list, tuple)):
        msg = (
            "load takes a relationship name such as 'author', a dotted path such as "
            f"'comments.author', or a list of them (got a {type(load).__name__})."
        )
        raise ValidationError(msg)
    options: list[ORMOption] = []
    soft_targets: dict[type[Any], None] = {}
    for item in items:
        if isinstance(item, ORMOption):
            options.append(_check_option(model, item))
            continue
        if not isinstance(item, str) or not item:
            msg = f"load takes relationship names or SQLAlchemy loader options (got {item!r})."
            raise ValidationError(msg)
        names = split_path(item, "load path")
        option: Any = None  # a chain of loader options (SQLAlchemy types it privately)
        current = model
        for name in names:
            prop = relationship_of(current, name, what=f"load path {item!r}")
            attr = getattr(current, name)
            if prop.uselist:
                option = selectinload(attr) if option is None else option.selectinload(attr)
            else:
                option = joinedload(attr) if option is None else option.joinedload(attr)
            current = prop.mapper.class_
            if model_info(current).soft_delete:
                soft_targets[current] = None
        assert option is not None
        options.append(option)
    if not with_deleted:
        options.extend(
            with_loader_criteria(target, _not_deleted, include_aliases=True)
            for target in soft_targets
        )
    return options
