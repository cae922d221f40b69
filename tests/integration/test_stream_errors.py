"""An error the server sends while a stream is read is an asyncdb error, however the
stream is read, on every backend (asyncdb._stream)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text

from asyncdb import AsyncDatabaseManager, AsyncDBError

#: Per backend: 1..1000, failing at row 500 while the rows are produced. PostgreSQL
#: (a server-side cursor), SQLite and MariaDB (an unbuffered cursor) send the error while
#: the stream is read; DuckDB computes a whole vector first, so its error comes from
#: ``stream()`` itself (translated there already).
FAILING_AT_500 = {
    "postgresql": "SELECT CASE WHEN x = 500 THEN (SELECT 1 UNION SELECT 2) ELSE x END "
    "FROM generate_series(1, 1000) AS x",
    "mysql": "SELECT IF(seq = 500, (SELECT 1 UNION SELECT 2), seq) FROM seq_1_to_1000",
    "sqlite": "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 1000) "
    "SELECT CASE WHEN x = 500 THEN abs(-9223372036854775808) ELSE x END FROM s",
    "duckdb": "SELECT CASE WHEN x = 500 THEN error('row 500') ELSE x END FROM range(1, 1001) t(x)",
}

Read = Callable[[Any], Awaitable[list[Any]]]


async def _iterate(result: Any) -> list[Any]:
    return [row async for row in result]


async def _partitions(result: Any) -> list[Any]:
    return [row async for part in result.partitions(50) for row in part]


async def _fetchmany(result: Any) -> list[Any]:
    rows: list[Any] = []
    while batch := await result.fetchmany(50):
        rows.extend(batch)
    return rows


async def _all(result: Any) -> list[Any]:
    return list(await result.all())


READS: dict[str, tuple[bool, Read]] = {
    # name: (stream_scalars rather than stream, how the rows are read)
    "async for": (False, _iterate),
    "partitions": (False, _partitions),
    "fetchmany": (False, _fetchmany),
    "all": (False, _all),
    "scalars, async for": (True, _iterate),
    "scalars, partitions": (True, _partitions),
    "mappings, async for": (False, lambda result: _iterate(result.mappings())),
}


@pytest.mark.parametrize("read", list(READS))
async def test_an_error_mid_stream_is_an_asyncdb_error(db: AsyncDatabaseManager, read: str) -> None:
    scalars, consume = READS[read]
    statement = text(FAILING_AT_500[db.backend]).execution_options(yield_per=50)

    async def run() -> None:
        async with db.session(read_only=True) as session:
            if scalars:
                result: Any = await session.stream_scalars(statement)
            else:
                result = await session.stream(statement)
            await consume(result)

    with pytest.raises(AsyncDBError) as info:
        await run()
    # Chained to what was raised: SQLAlchemy's error, or asyncpg's own from a fetch.
    assert info.value.__cause__ is not None
    assert not isinstance(info.value.__cause__, AsyncDBError)
    # The session and its connection went back to the pool: the next read works.
    async with db.session(read_only=True) as session:
        assert await session.scalar(text("SELECT 1")) == 1


async def test_a_stream_read_to_the_end_is_unchanged(db: AsyncDatabaseManager) -> None:
    statement = text(FAILING_AT_500[db.backend].replace("500", "5000")).execution_options(
        yield_per=50
    )
    async with db.session(read_only=True) as session:
        rows = [row async for row in await session.stream_scalars(statement)]
        mapped = await (await session.stream(statement)).mappings().all()
    assert rows == list(range(1, 1001))
    assert len(mapped) == 1000
