"""Detached instances built from Core rows, for models the ORM would load plainly.

A standalone read (no unit of work: a session of the call's own, closed before the
caller sees the result) pays for a ``Session``, the ORM's compile and loading machinery
and the session's close only to hand back *detached* instances. For a **plain** model the
same instances can be built from the rows of a Core ``SELECT`` of the table's columns:

* one table with a primary key, which is the mapper's; no inheritance and no
  polymorphic loading;
* every mapped attribute a column of that table, loaded with the row (nothing deferred,
  no ``column_property`` expression, no composite);
* no relationship loaded with the row (``lazy="select"``, ``"raise"``, ``"dynamic"``…);
* no ``load`` listener on the class, and no Session listener that a read would run
  (``do_orm_execute`` — global criteria such as ``with_loader_criteria`` —,
  ``loaded_as_persistent``, the transaction and detach events) other than asyncdb's own.

An instance is built as the ORM builds one (``ClassManager.new_instance``: no
``__init__``), its values written into its state's dict and its identity key set; it is
then what the
ORM path leaves after the session closed: detached, nothing expired, relationships
unloaded. Any other model, or a listener added at any time, sends the read through the
ORM as before (checked on every call; the model part is computed once per mapper).
"""

from __future__ import annotations

import dataclasses
import operator
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Column, Select, select
from sqlalchemy.orm import Mapper, configure_mappers
from sqlalchemy.orm.instrumentation import ClassManager

from ._session import ToolkitSession

__all__ = ["PlainLoader", "plain_loader"]

#: Relationship strategies that load nothing with the row.
_LAZY_ON_ACCESS = frozenset({"select", True, "raise", "raise_on_sql", "dynamic", "write_only"})
#: Session events an ORM read on a session of its own runs. asyncdb's own listeners on
#: them are taken as not reading (tests/unit/test_plain_load.py lists them: a new one
#: must be judged there).
_READ_EVENTS = (
    "do_orm_execute",
    "loaded_as_persistent",
    "persistent_to_detached",
    "after_transaction_create",
    "after_begin",
    "after_transaction_end",
)


@dataclasses.dataclass(frozen=True, eq=False, slots=True)
class PlainLoader:
    """Build detached instances of one plain model from rows of :attr:`columns`."""

    mapper: Mapper[Any]
    manager: ClassManager[Any]
    #: The table's mapped columns, in the order :meth:`select` returns them.
    columns: tuple[Column[Any], ...]
    #: The attribute key of each column.
    keys: tuple[str, ...]
    #: The class in identity keys (``Mapper.identity_key_from_primary_key``'s first).
    identity_class: type[Any]
    #: A row's primary key as a tuple (the identity key's second).
    pk_of: Callable[[Sequence[Any]], tuple[Any, ...]]
    #: Statements over :attr:`columns` the repository built once (by id, by
    #: ``with_deleted``; pages, by ``(with_deleted, ordering)``; keyset pages, by that and
    #: the cursor's NULL pattern): kept with the loader,
    #: so a mapper that gained a column gets new ones with its new loader.
    by_id: dict[bool, Select[Any]] = dataclasses.field(default_factory=dict)
    pages: dict[Any, tuple[Select[Any], Select[Any]]] = dataclasses.field(default_factory=dict)
    keysets: dict[Any, Select[Any]] = dataclasses.field(default_factory=dict)

    def select(self) -> Select[Any]:
        """``SELECT`` of :attr:`columns` (no FROM but the table's)."""
        return select(*self.columns)

    def usable(self) -> bool:
        """True when no listener present now would have seen an ORM load."""
        return not self.manager.dispatch.load and not _foreign_session_listeners()

    def instance(self, row: Sequence[Any]) -> Any:
        """A detached instance holding ``row``'s values, as the ORM leaves one."""
        return self.instances((row,))[0]

    def instances(self, rows: Iterable[Sequence[Any]]) -> list[Any]:
        """:meth:`instance` of each row (the loop of a page: about 1 µs a row)."""
        new_instance = self.manager.new_instance
        keys = self.keys
        identity = self.identity_class
        pk_of = self.pk_of
        found = []
        for row in rows:
            obj = new_instance()
            # A new state has nothing modified, expired or pending: values written
            # straight into the instance's dict are its loaded (committed) state, as
            # after an ORM load; the identity key makes it detached, not transient.
            obj.__dict__.update(zip(keys, row, strict=True))
            obj._sa_instance_state.key = (identity, pk_of(row), None)
            found.append(obj)
        return found


#: Per mapper: (how many properties it had, its loader or None). A mapper gains
#: properties after its first use (a backref from a model declared later, an attribute
#: assigned to the class): a new count means a new verdict.
_LOADERS: weakref.WeakKeyDictionary[Mapper[Any], tuple[int, PlainLoader | None]] = (
    weakref.WeakKeyDictionary()
)


def plain_loader(mapper: Mapper[Any]) -> PlainLoader | None:
    """The loader of ``mapper``'s class, or None when the ORM must load it."""
    _configure(mapper)  # mappers declared since (their backrefs), as a query would
    count = len(mapper.attrs)
    known = _LOADERS.get(mapper)
    if known is not None and known[0] == count:
        return known[1]
    loader = _build(mapper)
    _LOADERS[mapper] = (count, loader)
    return loader


def _configure(mapper: Mapper[Any]) -> None:
    # Mapper._check_configure: what SQLAlchemy runs before a query of the mapper (0.1 µs
    # when nothing is pending; configure_mappers() looks at every registry: 4 µs).
    check = getattr(mapper, "_check_configure", None)
    if check is not None:
        check()
    else:  # pragma: no cover - a SQLAlchemy without it
        configure_mappers()


def _build(mapper: Mapper[Any]) -> PlainLoader | None:
    if mapper.inherits is not None or mapper.polymorphic_on is not None:
        return None
    table_key = getattr(mapper.local_table, "primary_key", ())
    if not table_key or set(mapper.primary_key) != set(table_key):
        # A key of the mapper's own choosing (a view, a table without one) may repeat or
        # be NULL: the ORM's identity map merges such rows, a Core row would not.
        return None
    if mapper.with_polymorphic or mapper.composites or mapper.synonyms:
        return None
    table = mapper.local_table
    columns: list[Column[Any]] = []
    keys: list[str] = []
    for prop in mapper.column_attrs:
        column = prop.columns[0] if len(prop.columns) == 1 else None
        if (
            column is None
            or not isinstance(column, Column)
            or column.table is not table
            or prop.deferred
        ):
            return None
        columns.append(column)
        keys.append(prop.key)
    if any(rel.lazy not in _LAZY_ON_ACCESS for rel in mapper.relationships):
        return None
    if len(mapper.attrs) != len(columns) + len(mapper.relationships):
        return None  # something else is mapped (an association proxy is not an attr)
    try:
        positions = [columns.index(c) for c in mapper.primary_key]  # type: ignore[arg-type]
    except ValueError:
        return None
    get = operator.itemgetter(*positions)
    pk_of = (lambda row: (get(row),)) if len(positions) == 1 else get
    identity_class, _, token = mapper.identity_key_from_primary_key((None,) * len(positions))
    if token is not None:
        return None
    return PlainLoader(
        mapper=mapper,
        manager=mapper.class_manager,
        columns=tuple(columns),
        keys=tuple(keys),
        identity_class=identity_class,
        pk_of=pk_of,
    )


def _foreign_session_listeners() -> bool:
    """True when a Session listener other than asyncdb's would run on a read.

    Reads SQLAlchemy's class-level listener lists; where they are not where expected
    (another SQLAlchemy version) the answer is True, so reads keep the ORM path.
    """
    dispatch = ToolkitSession.dispatch
    try:
        for name in _READ_EVENTS:
            for fn in getattr(dispatch, name)._clslevel.get(ToolkitSession, ()):
                if not getattr(fn, "__module__", "").startswith("asyncdb."):
                    return True
    except (AttributeError, RuntimeError):  # RuntimeError: a listener added meanwhile
        return True
    return False
