"""Filters through relationships: ``author__username="jake"``, ``tags__name__in=[...]``.

A key whose first part names a relationship of the model filters on the related model,
with the rest of the key (a field and an optional operator, or a further relationship)
checked there exactly like a column filter: the related model's filterable fields
(``__filterable__``, else every column but its secrets) and the same operators.

Each relationship compiles to one ``EXISTS`` (``.any()`` for a collection, ``.has()``
for a scalar), so a row never comes back twice however many related rows match.
Filters on the same relationship in one call share that ``EXISTS``: they must hold for
the same related row (``tags__name="db", tags__id__gt=3`` is "a tag named db whose id
is above 3"). A soft-deleted related row never matches, whatever ``with_deleted`` says
about the rows themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, and_, exists
from sqlalchemy.orm import RelationshipProperty
from sqlalchemy.orm.interfaces import MANYTOMANY

from ._errors import ValidationError
from ._filters import FILTER_OPS, build_filters, check_filterable
from ._model_info import model_info

__all__ = ["build_conditions", "has_relation_filters"]

#: Relationships one key may cross (``a__b__c__d__e__field``).
MAX_HOPS = 5


def _split(model: type[Any], filters: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(column filters, {relationship: {rest of key: value}})``."""
    info = model_info(model)
    relationships = info.mapper.relationships
    columns: dict[str, Any] = {}
    related: dict[str, Any] = {}
    for key, value in filters.items():
        head, sep, rest = key.partition("__") if isinstance(key, str) else (key, "", "")
        if sep and rest and head in relationships and head not in info.columns:
            related.setdefault(head, {})[rest] = value
        else:
            columns[key] = value
    return columns, related


def has_relation_filters(model: type[Any], filters: Mapping[str, Any]) -> bool:
    """Does any filter go through a relationship (so its result depends on other tables)?"""
    return bool(filters) and bool(_split(model, filters)[1])


def build_conditions(
    model: type[Any], filters: Mapping[str, Any], fields: frozenset[str] | None = None
) -> list[ColumnElement[bool]]:
    """SQL conditions for column filters and filters through relationships.

    ``fields`` are the model's own filterable fields (a repository's allow-list), also
    where a path comes back to the model (``author__articles__score``); a related
    model's are its own.
    """
    return _build(model, filters, _Fields(model, fields), 0)


class _Fields:
    """The filterable fields of each model a path reaches: the root's may be narrowed."""

    def __init__(self, root: type[Any], fields: frozenset[str] | None) -> None:
        self.root = root
        self.fields = model_info(root).filterable if fields is None else fields

    def of(self, model: type[Any]) -> frozenset[str]:
        return self.fields if model is self.root else model_info(model).filterable


def _build(
    model: type[Any], filters: Mapping[str, Any], fields: _Fields, hops: int
) -> list[ColumnElement[bool]]:
    columns, related = _split(model, filters)
    conditions = build_filters(model, columns, fields.of(model))
    if related and hops >= MAX_HOPS:
        msg = f"A filter may cross at most {MAX_HOPS} relationships."
        raise ValidationError(msg)
    relationships = model_info(model).mapper.relationships
    for name, sub in related.items():
        prop = relationships[name]
        target = prop.mapper.class_
        target_info = model_info(target)
        link_only = _link_exists(prop, sub, fields.of(target))
        if link_only is not None:
            conditions.append(link_only)
            continue
        inner = _build(target, sub, fields, hops + 1)
        if target_info.soft_delete:
            inner.append(target.deleted_at.is_(None))
        attr = getattr(model, name)
        criterion = and_(*inner)
        conditions.append(attr.any(criterion) if prop.uselist else attr.has(criterion))
    return conditions


def _link_exists(
    prop: RelationshipProperty[Any], sub: Mapping[str, Any], fields: frozenset[str]
) -> Any:
    """``EXISTS`` over the association table alone, when that says it all; else None.

    A many-to-many filter on the related row's key only (``favorited_by__id=7``,
    ``followers__id__in=[...]``) on a model without soft delete needs no join to the
    related table: the association row holds the key. Cheaper, and a self-referential
    relationship (followers of a user) needs no alias either.
    """
    target = model_info(prop.mapper.class_)
    if prop.direction is not MANYTOMANY or target.soft_delete or prop.secondary is None:
        return None
    to_link = {t.key: s for t, s in prop.secondary_synchronize_pairs or ()}
    from_parent = list(prop.synchronize_pairs)
    if not from_parent or not sub:
        return None
    conditions = [link == parent for parent, link in from_parent]
    for key, value in sub.items():
        field, _, op = key.partition("__")
        column = target.attr_to_column.get(field)
        if field not in target.pk_names or op not in ("", "eq", "in") or column is None:
            return None
        if column.key not in to_link:
            return None
        check_filterable(target.model, field, fields)
        conditions.append(FILTER_OPS[op or "eq"](to_link[column.key], value, field))
    return exists().where(*conditions).correlate_except(prop.secondary)
