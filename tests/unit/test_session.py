"""Every I/O coroutine method of AsyncSession raises asyncdb errors (no database)."""

from __future__ import annotations

import inspect

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction

from asyncdb._session import ToolkitAsyncSession, ToolkitAsyncSessionTransaction

#: Public coroutine methods deliberately left alone, with the reason.
NOT_SESSION_IO = {
    "close_all": "a deprecated classmethod closing every session in the process",
}


def _public_coroutines(cls: type) -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(cls)
        if inspect.iscoroutinefunction(member) and not name.startswith("_")
    }


@pytest.mark.parametrize("name", sorted(_public_coroutines(AsyncSession) - set(NOT_SESSION_IO)))
def test_every_session_coroutine_method_is_translated(name: str) -> None:
    method = ToolkitAsyncSession.__dict__.get(name)
    assert method is not None, f"ToolkitAsyncSession does not translate {name}()"
    assert getattr(method, "__asyncdb_translated__", False)


@pytest.mark.parametrize(
    "name", sorted(_public_coroutines(AsyncSessionTransaction) | {"__aenter__", "__aexit__"})
)
def test_every_transaction_coroutine_method_is_translated(name: str) -> None:
    method = ToolkitAsyncSessionTransaction.__dict__.get(name)
    assert method is not None, f"the session's transaction does not translate {name}()"
    assert getattr(method, "__asyncdb_translated__", False)


def test_begin_and_begin_nested_hand_out_the_translating_transaction() -> None:
    session = ToolkitAsyncSession()
    assert type(session.begin()) is ToolkitAsyncSessionTransaction
    nested = session.begin_nested()
    assert type(nested) is ToolkitAsyncSessionTransaction
    assert nested.nested


async def test_stream_and_run_sync_raise_asyncdb_errors() -> None:
    """The methods the seed missed, on a real (in-memory SQLite) database."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from asyncdb import QueryError

    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        async with ToolkitAsyncSession(bind=engine) as session:
            with pytest.raises(QueryError):
                await session.stream(text("SELECT * FROM no_such_table"))
            await session.rollback()
            with pytest.raises(QueryError):
                await session.run_sync(
                    lambda sync: sync.execute(text("SELECT * FROM no_such_table"))
                )
            await session.rollback()
            with pytest.raises(QueryError):
                async with session.begin_nested():
                    await session.execute(text("SELECT * FROM no_such_table"))
    finally:
        await engine.dispose()
