"""A password in the URL's query string is masked wherever the URL appears."""

from __future__ import annotations

import logging

import pytest

from asyncdb import AsyncDatabaseManager, DatabaseSettings, mask_url

URLS = [
    "postgresql+asyncpg://app@db.example:5432/app?password=hunter2-secret",
    "postgresql+asyncpg://app@db.example:5432/app?sslpassword=hunter2-secret&sslmode=require",
    "postgresql+asyncpg://app:hunter2-secret@db.example:5432/app?PassWord=hunter2-secret",
    "postgresql+asyncpg://app@db.example/app?password=hunter2-secret&password=hunter2-secret",
]


@pytest.mark.parametrize("url", URLS)
def test_query_string_password_is_masked(url: str) -> None:
    masked = mask_url(url)
    assert "hunter2" not in masked
    assert "***" in masked
    assert "db.example" in masked


def test_other_query_parameters_stay_readable() -> None:
    masked = mask_url(URLS[1])
    assert "sslmode=require" in masked


@pytest.mark.parametrize("url", URLS)
def test_settings_and_manager_repr_hide_query_password(url: str) -> None:
    settings = DatabaseSettings(url=url)
    db = AsyncDatabaseManager(settings)
    for text in (repr(settings), repr(db), settings.masked_url, db.url):
        assert "hunter2" not in text


async def test_failed_connect_log_and_error_hide_query_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listens on port 9 of loopback: the connect fails and says so, masked."""
    url = "postgresql+asyncpg://app@127.0.0.1:9/app?password=hunter2-secret"
    db = AsyncDatabaseManager(url, connect_retries=1, connect_timeout=2.0)
    with caplog.at_level(logging.DEBUG, logger="asyncdb"):
        report = await db.health_check()
        with pytest.raises(Exception) as info:
            await db.connect()
    await db.dispose()
    assert not report.healthy
    assert "hunter2" not in str(report.to_dict())
    assert "hunter2" not in str(info.value)
    assert all("hunter2" not in r.getMessage() for r in caplog.records)
