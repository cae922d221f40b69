"""The suite's dialect reuse (tests/shared_dialects.py): a disposed engine's dialect and
compiled statements go to the next engine of the same configuration, never to a live one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

pytestmark = pytest.mark.skipif(
    os.environ.get("ASYNCDB_TEST_SHARED_DIALECTS") == "0", reason="the reuse is turned off"
)


async def _connected(url: str, **kwargs: object) -> AsyncEngine:
    engine = create_async_engine(url, **kwargs)
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return engine


async def test_a_disposed_engines_dialect_and_compiled_statements_go_to_the_next(
    tmp_path: Path,
) -> None:
    first = await _connected(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", pool_size=3)
    live = await _connected(f"sqlite+aiosqlite:///{tmp_path / 'b.db'}", pool_size=3)
    assert live.dialect is not first.dialect  # both alive: never one dialect
    dialect, cache = first.dialect, first.sync_engine._compiled_cache
    await first.dispose()
    after = await _connected(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", pool_size=3)
    assert after.dialect is dialect
    assert after.sync_engine._compiled_cache is cache
    assert after.sync_engine.pool is not first.sync_engine.pool
    other = await _connected(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}", pool_size=4)
    assert other.dialect is not dialect  # another configuration
    for engine in (live, after, other):
        await engine.dispose()


async def test_a_dialect_with_a_listener_left_on_it_is_not_handed_on(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    first = await _connected(url, pool_size=2)

    def noop(*_: object) -> None:
        return None

    event.listen(first.sync_engine, "do_execute", noop)  # a dialect event
    await first.dispose()
    second = await _connected(url, pool_size=2)
    assert second.dialect is not first.dialect
    await second.dispose()


async def test_arguments_without_a_stable_form_keep_their_own_dialect(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"

    def serializer(value: object) -> str:
        return repr(value)

    first = await _connected(url, json_serializer=serializer)
    await first.dispose()
    second = await _connected(url, json_serializer=serializer)
    assert second.dialect is not first.dialect
    await second.dispose()
