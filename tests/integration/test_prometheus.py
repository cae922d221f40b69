"""Prometheus export on every backend: the text parses and carries the documented names."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from asyncdb import AsyncDatabaseManager, ConfigurationError, Metrics, QueryError
from asyncdb.prometheus import DURATION_BUCKETS, AsyncDBCollector, render
from tests.integration.conftest import manager_for

DOCUMENTED = {
    "asyncdb_queries": "counter",
    "asyncdb_query_errors": "counter",
    "asyncdb_query_duration_seconds": "histogram",
    "asyncdb_slow_queries": "counter",
    "asyncdb_statements_evicted": "counter",
    "asyncdb_pool_size": "gauge",
    "asyncdb_pool_checked_out": "gauge",
    "asyncdb_pool_checked_in": "gauge",
    "asyncdb_pool_overflow": "gauge",
    "asyncdb_pool_checkouts": "counter",
    "asyncdb_pool_checkout_timeouts": "counter",
    "asyncdb_pool_checkout_wait_seconds": "histogram",
    "asyncdb_pool_connections_opened": "counter",
    "asyncdb_pool_connections_closed": "counter",
    "asyncdb_pool_connections_invalidated": "counter",
    "asyncdb_pool_leaked_connections": "gauge",
    "asyncdb_connection_leaks": "counter",
    "asyncdb_transactions": "counter",
    "asyncdb_transactions_active": "gauge",
    "asyncdb_transaction_duration_seconds": "histogram",
}


def samples(exposition: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def run_workload(db: AsyncDatabaseManager) -> None:
    db.metrics.reset()
    for _ in range(3):
        async with db.session() as session:
            await session.execute(text("SELECT 1"))
    with pytest.raises(QueryError):
        async with db.session() as session:
            await session.execute(text("SELECT * FROM no_such_table"))
    db.notify_transaction_begin()
    db.notify_transaction_end("commit", 0.003)


async def test_text_output_parses_and_has_the_documented_names(db: AsyncDatabaseManager) -> None:
    await run_workload(db)
    exposition = render(db)
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    for name, kind in DOCUMENTED.items():
        assert name in families, name
        assert families[name].type == kind, name
    assert set(families) == set(DOCUMENTED)

    label = (("database", db.metrics.database),)
    values = samples(exposition)
    snap = db.metrics.snapshot()
    assert values[("asyncdb_queries_total", label)] == snap["queries"]["total"] >= 4
    assert values[("asyncdb_query_errors_total", label)] == 1
    assert values[("asyncdb_query_duration_seconds_count", label)] == snap["queries"]["total"]
    assert values[("asyncdb_query_duration_seconds_sum", label)] == pytest.approx(
        snap["queries"]["total_seconds"], abs=1e-5
    )
    inf = (("database", db.metrics.database), ("le", "+Inf"))
    assert values[("asyncdb_query_duration_seconds_bucket", inf)] == snap["queries"]["total"]
    buckets = [
        values[("asyncdb_query_duration_seconds_bucket", (label[0], ("le", repr(b))))]
        for b in DURATION_BUCKETS
    ]
    assert buckets == sorted(buckets)
    assert values[("asyncdb_pool_checked_out", label)] == 0
    assert values[("asyncdb_pool_checkouts_total", label)] == snap["pool"]["checkouts"]
    commit = (("database", db.metrics.database), ("outcome", "commit"))
    assert values[("asyncdb_transactions_total", commit)] == 1
    assert values[("asyncdb_transaction_duration_seconds_count", label)] == 1
    assert "no_such_table" not in exposition  # no SQL text in labels or help


async def test_collector_exports_several_managers_in_one_registry(
    db: AsyncDatabaseManager, db_url: str
) -> None:
    other = manager_for(db_url)
    await other.connect()
    try:
        registry = CollectorRegistry()
        collector = AsyncDBCollector(db, registry=registry)
        collector.add(other, database="replica")
        async with other.session() as session:
            await session.execute(text("SELECT 1"))
        values = samples(generate_latest(registry).decode())
        assert values[("asyncdb_queries_total", (("database", "replica"),))] >= 1
        assert ("asyncdb_queries_total", (("database", db.metrics.database),)) in values
        with pytest.raises(ConfigurationError, match="already exports"):
            collector.add(Metrics(database="replica"))
        collector.remove(other)
        values = samples(generate_latest(registry).decode())
        assert ("asyncdb_queries_total", (("database", "replica"),)) not in values
    finally:
        await other.dispose()


def test_collector_registers_before_connect() -> None:
    registry = CollectorRegistry(auto_describe=True)
    collector = AsyncDBCollector(Metrics(database="app"), registry=registry)
    assert {m.name for m in collector.describe()} >= {"asyncdb_queries", "asyncdb_pool_size"}
    values = samples(generate_latest(registry).decode())
    assert values[("asyncdb_queries_total", (("database", "app"),))] == 0
    assert ("asyncdb_pool_size", (("database", "app"),)) not in values  # no pool yet
