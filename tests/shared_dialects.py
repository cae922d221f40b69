"""Engines reuse the dialects (and compiled statements) of disposed engines, in the suite.

Every test builds new engines (a new manager per test), and SQLAlchemy keys its cache of
compiled statements by the dialect object: each new engine therefore compiled every
statement again, about 8 compilations per test and 13% of the fast loop's CPU. A
production process keeps one engine and compiles each statement once. :func:`install`
wraps the engine factory that ``create_async_engine`` calls: an engine built with the
same configuration as one disposed earlier (the URL's driver, host, port and database,
and the same keyword arguments; a SQLite or DuckDB file's path does not count,
``:memory:`` does) takes over that engine's dialect, initialized by its first
connection, and its cache of compiled statements. The engine, its pool and its
connections stay the engine's own.

A dialect is handed on only by ``Engine.dispose()``, never while its engine may still be
in use, and only without dialect-level listeners left on it (asyncdb's metrics hooks
are dialect events and are removed before the manager disposes its engine), so two live
engines never share one. A configuration whose arguments hold a callable or another
object without a stable ``repr`` keeps dialects of its own.
``ASYNCDB_TEST_SHARED_DIALECTS=0`` turns the reuse off (to rule it out while hunting a
failure).
"""

from __future__ import annotations

import os
import re
import weakref
from collections import defaultdict
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import engine as async_engine_module
from sqlalchemy.util import LRUCache

#: The size of a reused cache: big enough for every statement of the suite.
_CACHE_SIZE = 20_000
_UNSTABLE = re.compile(r" at 0x[0-9a-f]+")
Held = tuple[str, Any, Any]  # (configuration, dialect, compiled cache)
_free: defaultdict[str, list[tuple[Any, Any]]] = defaultdict(list)
_held: weakref.WeakKeyDictionary[Engine, Held] = weakref.WeakKeyDictionary()


def _key(url: Any, kwargs: dict[str, Any]) -> str | None:
    """The configuration a dialect depends on, or None when it has no stable form."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() in ("sqlite", "duckdb") and database != ":memory:":
        database = "<file>"
    text = repr(
        (
            parsed.drivername,
            parsed.host,
            parsed.port,
            parsed.username,
            database,
            sorted(parsed.query.items()),
            sorted(kwargs.items(), key=lambda item: item[0]),
        )
    )
    return None if _UNSTABLE.search(text) else text


def _clean(dialect: Any) -> bool:
    """Whether no listener is left on ``dialect``'s own events (asyncdb's or a test's)."""
    dispatch = dialect.dispatch
    return not any(getattr(dispatch, name) for name in dispatch._event_names)


def install() -> None:
    """Make engines reuse disposed engines' dialects and caches (see the module)."""
    if os.environ.get("ASYNCDB_TEST_SHARED_DIALECTS", "1") == "0":
        return
    create = async_engine_module._create_engine
    if getattr(create, "reuses_dialects", False):
        return

    def create_reusing(url: Any, **kwargs: Any) -> Engine:
        engine = create(url, **kwargs)
        key = _key(url, kwargs)
        if key is None or engine._compiled_cache is None:
            return engine
        if _free[key]:
            engine.dialect, engine._compiled_cache = _free[key].pop()
            engine.pool._dialect = engine.dialect  # what the pool resets and pings with
            _held[engine] = (key, engine.dialect, engine._compiled_cache)
            return engine
        engine._compiled_cache = LRUCache(_CACHE_SIZE)

        def initialized(*_: Any) -> None:  # after the engine's own first_connect
            _held[engine] = (key, engine.dialect, engine._compiled_cache)

        event.listen(engine.pool, "connect", initialized, once=True)
        return engine

    dispose = Engine.dispose

    def dispose_and_hand_on(self: Engine, close: bool = True) -> None:
        dispose(self, close=close)
        held = _held.pop(self, None)
        if held is not None and _clean(held[1]):
            _free[held[0]].append(held[1:])

    create_reusing.reuses_dialects = True  # type: ignore[attr-defined]
    async_engine_module._create_engine = create_reusing  # type: ignore[assignment]
    Engine.dispose = dispose_and_hand_on  # type: ignore[method-assign]
