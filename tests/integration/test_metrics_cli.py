"""``asyncdb metrics`` on every backend."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from asyncdb.cli import main


def test_metrics_json(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", "--url", db_url, "--json"]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["queries"]["total"] >= 1  # the health check's SELECT 1
    assert snapshot["queries"]["errors"] == 0
    assert snapshot["pool"]["checkouts"] >= 1
    assert set(snapshot["transactions"]) >= {"begun", "committed", "rolled_back"}


def test_metrics_table(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", "--url", db_url]) == 0
    out = capsys.readouterr().out
    assert "healthy" in out
    for label in ("queries", "percentiles", "slow queries", "pool", "leaks", "transactions"):
        assert label in out
    assert "SELECT ?" in out  # the top statements


def test_metrics_prometheus(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["metrics", "--url", db_url, "--prometheus"]) == 0
    names = {f.name for f in text_string_to_metric_families(capsys.readouterr().out)}
    assert {
        "asyncdb_queries",
        "asyncdb_query_duration_seconds",
        "asyncdb_pool_checked_out",
    } <= names


def test_metrics_on_an_unreachable_server_exits_2_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql+asyncpg://app:hunter2-secret@127.0.0.1:1/app"
    assert main(["metrics", "--url", url, "--json"]) == 2
    captured = capsys.readouterr()
    assert "hunter2-secret" not in captured.out + captured.err
    assert "Could not connect" in captured.err
