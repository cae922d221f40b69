"""SQLAlchemy expressions as filters: the ``where=`` argument of reads and writes by filter.

``where`` holds boolean SQL expressions on the model (``Post.score > 3``,
``or_(Post.title.ilike("a%"), Post.tags.any(Tag.name == "db"))``) or a base
``select(Post)`` for the rare rest (joins, subqueries). They are combined with the
keyword filters, never instead of the repository's guarantees: soft-deleted rows stay
out unless ``with_deleted=True``, page sizes are still capped, keyword filters are still
checked, and ``count``/``exists`` with an expression bypass the cache (an expression
has no key the cache could trust).

Checks, before any SQL:

* an expression must be a boolean SQL expression (not a column), with no raw SQL text
  anywhere in it (``text()``, ``literal_column()``, also inside a subquery);
* it may name only the model's own table(s) outside of subqueries: ``Writer.name ==
  "x"`` on a Post query would add a cross join and repeat every row, so it is refused
  with a pointer to ``writer__name=`` or ``Post.writer.has(...)``;
* a base select must select the model and nothing else. It is applied as
  ``key IN (base)``, so its joins cannot repeat rows and its own soft-delete filtering
  (or lack of it) cannot bring back deleted rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Select, tuple_
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ColumnClause, TextClause

from ._errors import ValidationError
from ._model_info import model_info

__all__ = ["Where", "where_conditions"]

#: The literal columns SQLAlchemy itself writes (``EXISTS (SELECT 1 ...)``,
#: ``count(*)``); any other literal text is raw SQL.
_OWN_LITERALS = frozenset({"1", "*"})

#: What ``where=`` accepts: one expression or base select, or a sequence of them.
Where = ColumnElement[bool] | Select[Any] | Sequence[ColumnElement[bool] | Select[Any]] | None


def where_conditions(model: type[Any], where: Where) -> list[ColumnElement[bool]]:
    """The conditions of ``where`` (see the module docstring); [] for None."""
    if where is None:
        return []
    items: Sequence[Any] = where if isinstance(where, (list, tuple)) else [where]
    return [_condition(model, item) for item in items]


def _raw_sql(item: Any) -> bool:
    """Does ``item`` hold raw SQL text (``text()``, ``literal_column()``) anywhere?"""
    return any(
        isinstance(element, TextClause)
        or (
            isinstance(element, ColumnClause)
            and element.is_literal
            and element.name not in _OWN_LITERALS
        )
        for element in visitors.iterate(item)
    )


def _condition(model: type[Any], item: Any) -> ColumnElement[bool]:
    info = model_info(model)
    if isinstance(item, (Select, ColumnElement)) and _raw_sql(item):
        msg = (
            f"A where condition on {info.name} holds raw SQL text (text() or "
            "literal_column()), which is not accepted: write it with the model's "
            f"columns ({info.name}.<column> == value) and SQLAlchemy functions."
        )
        raise ValidationError(msg)
    if isinstance(item, Select):
        return _base(model, item)
    if not isinstance(item, ColumnElement) or not isinstance(item.type, Boolean):
        msg = (
            f"where takes boolean SQL conditions on {info.name} such as "
            f"`{info.name}.{info.pk_names[0]} > 3`, a select({info.name}), or a list of them "
            f"(got {type(item).__name__}); raw SQL text is not accepted."
        )
        raise ValidationError(msg)
    own = set(info.mapper.tables)
    # The FROM objects the condition adds to the query (subqueries such as the EXISTS
    # of .any()/.has() are self-contained and add none).
    foreign = sorted(str(getattr(f, "name", f)) for f in item._from_objects if f not in own)
    if foreign:
        msg = (
            f"A where condition on {info.name} names other table(s) directly: "
            f"{', '.join(foreign)}; that would join them in and repeat rows. Filter through "
            "the relationship instead (a keyword such as author__name=..., or "
            f"{info.name}.<relationship>.has(...) / .any(...))."
        )
        raise ValidationError(msg)
    return item


def _base(model: type[Any], stmt: Select[Any]) -> ColumnElement[bool]:
    info = model_info(model)
    described = stmt.column_descriptions
    if len(described) != 1 or described[0].get("expr") is not model:
        msg = (
            f"A base query for the {info.name} repository must be select({info.name}) "
            "(with any joins and conditions), selecting nothing else."
        )
        raise ValidationError(msg)
    keys = [getattr(model, name) for name in info.pk_names]
    inner = stmt.with_only_columns(*keys).correlate(None)
    if len(keys) == 1:
        return keys[0].in_(inner)  # type: ignore[no-any-return]
    return tuple_(*keys).in_(inner)
