"""Every bad option is a ConfigurationError, raised before any I/O (issue 13)."""

from __future__ import annotations

from typing import Any

import pytest

from asyncdb import (
    AsyncDatabaseManager,
    AsyncUnitOfWork,
    ConfigurationError,
    Metrics,
    Repository,
    run_tx,
)
from tests.integration.models import Item


def _db() -> AsyncDatabaseManager:
    return AsyncDatabaseManager("sqlite+aiosqlite:///:memory:")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Repository(Item),
        lambda: Repository(Item, _db(), session=object()),  # type: ignore[arg-type]
        lambda: Repository(object, _db()),  # type: ignore[type-var]
        lambda: Repository(Item, _db(), audit="no"),  # type: ignore[arg-type]
        lambda: Repository(Item, _db(), filterable=["nope"]),
        lambda: Repository(Item, _db(), filterable="name"),
        lambda: AsyncUnitOfWork(_db(), isolation_level="SOMETIMES"),
        lambda: Metrics(max_statements=0),
        lambda: AsyncDatabaseManager("sqlite+aiosqlite:///:memory:", pool_size=-1),
        lambda: AsyncDatabaseManager("mongodb://x/y"),
    ],
)
def test_bad_options_are_configuration_errors(make: Any) -> None:
    with pytest.raises(ConfigurationError):
        make()


@pytest.mark.parametrize(
    "options", [{"retries": -1}, {"retries": 1000}, {"backoff": -1}, {"backoff": float("nan")}]
)
async def test_bad_run_tx_options_are_configuration_errors(options: dict[str, Any]) -> None:
    async def work(uow: AsyncUnitOfWork) -> None:
        raise AssertionError("never runs")

    with pytest.raises(ConfigurationError):
        await run_tx(work, db=_db(), **options)
