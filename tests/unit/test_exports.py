from __future__ import annotations

import types
import typing

import asyncdb


def test_all_is_sorted_and_complete() -> None:
    assert asyncdb.__all__ == sorted(asyncdb.__all__)
    public = {
        name
        for name in dir(asyncdb)
        if not name.startswith("_") and not isinstance(getattr(asyncdb, name), types.ModuleType)
    }
    exported = set(asyncdb.__all__) - {"__version__"}
    assert public - exported - {"annotations"} == set(), "public names missing from __all__"
    for name in asyncdb.__all__:
        assert hasattr(asyncdb, name), name


def test_error_tree_has_one_root() -> None:
    for name in asyncdb.__all__:
        obj = getattr(asyncdb, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, asyncdb.AsyncDBError), name


def test_exported_names_report_the_public_module() -> None:
    for name in asyncdb.__all__:
        obj = getattr(asyncdb, name)
        if isinstance(obj, type) and "__annotations__" in vars(obj):
            # Annotations resolve in the home module (SQLAlchemy mixins, dataclasses).
            assert typing.get_type_hints(obj) is not None
            continue
        if isinstance(obj, (type, types.FunctionType)):
            assert obj.__module__ == "asyncdb", f"{name}.__module__ is {obj.__module__!r}"
