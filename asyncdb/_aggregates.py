"""Counts and flags per row over a relationship, in the same query as the rows.

``annotate={"favorites": Count("favorited_by"), "favorited": Exists("favorited_by",
id=me)}`` on a read adds one correlated subquery per name to the row query, and sets the
value on each returned instance as a plain attribute (``article.favorites``): no N+1,
and it works with every page kind because the rows are still one query.

* :class:`Count` counts the live related rows (optionally filtered) at the end of a
  relationship path (``"comments"``, ``"author.followers"``);
* :class:`Exists` is True when at least one live related row matches — the same
  ``EXISTS`` a relation filter compiles to (``favorited_by__id=7``).

Paths and filters are checked like relation filters (:mod:`._relation_filters`): names
against the mapper, fields against each related model's filterable fields. Soft-deleted
related rows are never counted nor matched, on every hop of the path.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import functools
import keyword
import types
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import aliased
from sqlalchemy.orm.interfaces import MANYTOMANY, ONETOMANY

from ._errors import ValidationError
from ._filters import build_filters
from ._loading import relationship_of, split_path
from ._model_info import model_info
from ._relation_filters import build_conditions

__all__ = [
    "Aggregate",
    "Annotate",
    "Count",
    "Exists",
    "annotation_columns",
    "check_annotation_names",
]

#: At most this many annotations on one read.
MAX_ANNOTATIONS = 20


@dataclasses.dataclass(frozen=True, init=False)
class Aggregate:
    """A value computed per row over a relationship path: :class:`Count` or :class:`Exists`."""

    path: str
    filters: Mapping[str, Any]

    def __init__(self, path: str, /, **filters: Any) -> None:
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "filters", types.MappingProxyType(dict(filters)))

    def __repr__(self) -> str:
        # Filter values may be user data: only their names appear.
        names = ", ".join(f"{k}=..." for k in self.filters)
        return f"{type(self).__name__}({self.path!r}{', ' if names else ''}{names})"


class Count(Aggregate):
    """The number of live related rows along ``path`` matching ``filters`` (an int).

    ``Count("comments")``, ``Count("favorited_by")``, ``Count("tags", name__like="py%")``.
    """


class Exists(Aggregate):
    """True when a live related row along ``path`` matches ``filters`` (a bool).

    ``Exists("favorited_by", id=current_user_id)``, ``Exists("author.followers", id=me)``.
    """


#: What ``annotate=`` accepts: names mapped to aggregates, or None.
Annotate = Mapping[str, Aggregate] | None


def check_annotation_names(model: type[Any], annotate: Mapping[str, Any]) -> None:
    """Names must be new public identifiers: never a column, relationship or method."""
    if not isinstance(annotate, Mapping):
        msg = (
            "annotate takes a mapping of names to Count(...) or Exists(...) "
            f"(got a {type(annotate).__name__})."
        )
        raise ValidationError(msg)
    if len(annotate) > MAX_ANNOTATIONS:
        msg = f"annotate takes at most {MAX_ANNOTATIONS} names (got {len(annotate)})."
        raise ValidationError(msg)
    for name, value in annotate.items():
        if (
            not isinstance(name, str)
            or not name.isidentifier()
            or keyword.iskeyword(name)
            or name.startswith("_")
        ):
            msg = f"Annotation names must be public identifiers (got {name!r})."
            raise ValidationError(msg)
        if hasattr(model, name):
            msg = (
                f"Annotation name {name!r} is already an attribute of {model.__name__}; "
                "pick another name."
            )
            raise ValidationError(msg)
        if not isinstance(value, (Count, Exists)):
            msg = f"annotate[{name!r}] must be Count(...) or Exists(...) (got {value!r})."
            raise ValidationError(msg)


def annotation_columns(
    model: type[Any],
    annotate: Mapping[str, Aggregate] | None,
    fields: frozenset[str] | None = None,
) -> list[ColumnElement[Any]]:
    """One labelled column per annotation, to select next to the model.

    ``fields`` are the model's filterable fields (a repository's allow-list), which
    also hold where a path comes back to the model (``Count("author.articles", ...)``).
    """
    if fields is None:
        fields = model_info(model).filterable
    if not annotate:
        return []
    check_annotation_names(model, annotate)
    return [_column(model, fields, aggregate).label(name) for name, aggregate in annotate.items()]


#: Filter values a built column may be remembered for (hashable, compared by type too).
_SCALARS = (str, int, float, bool, type(None), decimal.Decimal, dt.date, dt.time, uuid.UUID)


def _column(model: type[Any], fields: frozenset[str], aggregate: Aggregate) -> ColumnElement[Any]:
    """The subquery of ``aggregate``, built (and checked) once per distinct aggregate.

    Building one costs more client CPU than the rest of a read's statement (the paths,
    the checks, the EXISTS clauses); SQL expressions are immutable, so a page that asks
    for the same counts and flags again reuses them. Filter values that are not plain
    scalars (a list for ``__in``) are built each time.
    """
    items = tuple(sorted(aggregate.filters.items()))
    if all(type(value) in _SCALARS for _, value in items):
        typed = tuple((key, type(value), value) for key, value in items)
        cls: Any = model  # hashable, though mypy does not see a class as such
        kind: Any = type(aggregate)
        return _built(cls, fields, kind, aggregate.path, typed)
    return _build_column(model, fields, aggregate)


@functools.lru_cache(maxsize=1024)
def _built(
    model: Any,  # a class (typed Any: mypy does not see a class as Hashable)
    fields: frozenset[str],
    kind: Any,
    path: str,
    typed: tuple[tuple[str, type[Any], Any], ...],
) -> ColumnElement[Any]:
    aggregate = kind(path, **{key: value for key, _, value in typed})
    return _build_column(model, fields, aggregate)


def _build_column(
    model: type[Any], fields: frozenset[str], aggregate: Aggregate
) -> ColumnElement[Any]:
    if isinstance(aggregate, Exists):
        return _exists(model, aggregate, fields)
    assert isinstance(aggregate, Count)
    return _count(model, aggregate, fields)


def _hops(path: object) -> list[str]:
    if not isinstance(path, str) or not path:
        msg = f"A Count/Exists path names relationships such as 'comments' (got {path!r})."
        raise ValidationError(msg)
    return split_path(path, "Count/Exists path")


def _exists(model: type[Any], aggregate: Exists, fields: frozenset[str]) -> ColumnElement[bool]:
    hops = _hops(aggregate.path)
    current = model
    for name in hops:  # checked first, for a message naming the path
        current = relationship_of(current, name, what=f"path {aggregate.path!r}").mapper.class_
    if not aggregate.filters:
        return _any_live(model, hops)
    prefix = "__".join(hops)
    keyed = {f"{prefix}__{key}": value for key, value in aggregate.filters.items()}
    # Each relationship becomes one EXISTS; all filters share the last one.
    conditions = build_conditions(model, keyed, fields)
    condition = conditions[0]
    return condition


def _any_live(model: type[Any], hops: list[str]) -> ColumnElement[bool]:
    """``EXISTS`` a live related row along ``hops`` (no field named, so none checked)."""
    prop = model_info(model).mapper.relationships[hops[0]]
    target = prop.mapper.class_
    inner: list[ColumnElement[bool]] = []
    if len(hops) > 1:
        inner.append(_any_live(target, hops[1:]))
    if model_info(target).soft_delete:
        inner.append(target.deleted_at.is_(None))
    criterion = and_(*inner) if inner else None
    attr = getattr(model, hops[0])
    return attr.any(criterion) if prop.uselist else attr.has(criterion)  # type: ignore[no-any-return]


def _count(model: type[Any], aggregate: Count, fields: frozenset[str]) -> ColumnElement[int]:
    hops = _hops(aggregate.path)
    info = model_info(model)
    if len(hops) == 1:
        direct = _direct_count(model, hops[0], aggregate)
        if direct is not None:
            return direct
    parent = aliased(model)
    stmt = select(func.count()).select_from(parent)
    current_cls: type[Any] = model
    current: Any = parent
    for name in hops:
        prop = relationship_of(current_cls, name, what=f"path {aggregate.path!r}")
        target_cls = prop.mapper.class_
        target = aliased(target_cls)
        stmt = stmt.join(getattr(current, name).of_type(target))
        if model_info(target_cls).soft_delete:
            stmt = stmt.where(target.deleted_at.is_(None))
        current_cls, current = target_cls, target
    target_fields = fields if current_cls is model else model_info(current_cls).filterable
    # Checked on the class (messages name it), then built on the alias.
    build_filters(current_cls, aggregate.filters, target_fields)
    stmt = stmt.where(*build_filters(current, aggregate.filters, target_fields))
    stmt = stmt.where(
        *(getattr(parent, key) == getattr(model, key) for key in info.pk_names)
    ).correlate(model)
    return stmt.scalar_subquery()


def _direct_count(model: type[Any], name: str, aggregate: Count) -> ColumnElement[int] | None:
    """One hop, counted without re-joining the parent (None: take the general path).

    A one-to-many counts the child rows by their foreign key; a many-to-many without
    filters on a related model without soft delete counts the association rows alone.
    A self-referential one-to-many takes the general path (its table needs an alias).
    """
    prop = relationship_of(model, name, what=f"path {aggregate.path!r}")
    target = model_info(prop.mapper.class_)
    info = model_info(model)
    pairs = list(prop.synchronize_pairs or ())
    if not pairs:
        return None
    if prop.direction is MANYTOMANY and prop.secondary is not None:
        if aggregate.filters or target.soft_delete:
            return None
        stmt = select(func.count()).select_from(prop.secondary)
    elif prop.direction is ONETOMANY and target.table is not info.table:
        stmt = select(func.count()).select_from(target.table)
        stmt = stmt.where(*build_filters(target.model, aggregate.filters, target.filterable))
        if target.soft_delete:
            stmt = stmt.where(target.model.deleted_at.is_(None))
    else:
        return None
    stmt = stmt.where(*(child == parent for parent, child in pairs)).correlate(model)
    return stmt.scalar_subquery()
