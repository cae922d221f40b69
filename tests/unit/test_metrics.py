"""Metrics without a database: histogram, normalization, bounds, slow log, leaks."""

from __future__ import annotations

import itertools
import json
import logging
import random

import pytest

from asyncdb import ConfigurationError, Metrics, audit_context
from asyncdb._instrument import call_site
from asyncdb._metrics import (
    BUCKET_BOUNDS,
    DEFAULT_MAX_STATEMENTS,
    MAX_SQL_LENGTH,
    CallFrame,
    LatencyHistogram,
    describe_frames,
    normalize_sql,
)

PROMETHEUS_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def make_metrics(**overrides: object) -> Metrics:
    options: dict[str, object] = {
        "database": "unit",
        "slow_query_threshold": 1.0,
        "leak_threshold": 1.0,
        "enabled": True,
    }
    options.update(overrides)
    return Metrics(**options)  # type: ignore[arg-type]


def assert_json(snapshot: dict[str, object]) -> None:
    assert json.loads(json.dumps(snapshot, allow_nan=False)) == snapshot


# -- histogram -------------------------------------------------------------------------


def test_bucket_bounds_are_sorted_and_hold_the_prometheus_boundaries() -> None:
    assert list(BUCKET_BOUNDS) == sorted(set(BUCKET_BOUNDS))
    for bound in PROMETHEUS_DEFAULT_BUCKETS:
        assert bound in BUCKET_BOUNDS
    steps = [b / a for a, b in itertools.pairwise(BUCKET_BOUNDS)]
    assert max(steps) < 1.15


def test_histogram_memory_is_constant() -> None:
    hist = LatencyHistogram()
    size = len(hist.counts)
    rng = random.Random(1)
    for _ in range(50_000):
        hist.record(rng.expovariate(1000.0))
    hist.record(5000.0)  # beyond the last bound
    assert len(hist.counts) == size
    assert sum(hist.counts) == hist.count == 50_001
    assert hist.max == 5000.0


def test_percentiles_are_within_the_bucket_resolution() -> None:
    hist = LatencyHistogram()
    values = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1 s, uniform
    random.Random(2).shuffle(values)
    for value in values:
        hist.record(value)
    for q, exact in ((0.50, 0.500), (0.95, 0.950), (0.99, 0.990)):
        estimate = hist.percentile(q)
        assert estimate is not None
        assert abs(estimate - exact) / exact < 0.06, (q, estimate)
    assert hist.percentile(0.0) == pytest.approx(0.001)
    assert hist.percentile(1.0) == pytest.approx(1.0)


def test_percentile_of_one_value_is_that_value_and_empty_is_none() -> None:
    hist = LatencyHistogram()
    assert hist.percentile(0.5) is None
    hist.record(0.0123)
    assert hist.percentile(0.5) == pytest.approx(0.0123)
    assert hist.percentile(0.99) == pytest.approx(0.0123)


def test_cumulative_counts_match_a_direct_count() -> None:
    hist = LatencyHistogram()
    rng = random.Random(3)
    values = [rng.uniform(0, 0.2) for _ in range(2000)] + [0.05, 0.1, 30.0]
    for value in values:
        hist.record(value)
    cumulative, count, total = hist.cumulative(PROMETHEUS_DEFAULT_BUCKETS)
    assert count == len(values)
    assert total == pytest.approx(sum(values))
    for bound, n in cumulative:
        assert n == sum(1 for v in values if v <= bound), bound


# -- SQL normalization -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = 'x''y' AND b = 42", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT t1.c2 FROM t1 WHERE t1.id = $1", "SELECT t1.c2 FROM t1 WHERE t1.id = ?"),
        ("SELECT 1.5e3, -7", "SELECT ?, -?"),
        ("SELECT a FROM t WHERE id IN (?, ?, ?)", "SELECT a FROM t WHERE id IN (...)"),
        (
            "SELECT a FROM t WHERE id NOT IN ($1::INTEGER, $2::INTEGER) LIMIT $3",
            "SELECT a FROM t WHERE id NOT IN (...) LIMIT ?",
        ),
        ("SELECT a FROM t WHERE id IN (1, 2, 3)", "SELECT a FROM t WHERE id IN (...)"),
        (
            "SELECT a FROM t WHERE id IN (SELECT b FROM u WHERE c = 5)",
            "SELECT a FROM t WHERE id IN (SELECT b FROM u WHERE c = ?)",
        ),
        (
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?)",
            "INSERT INTO t (a, b) VALUES (?, ?), ...",
        ),
        ("SELECT  a\n\t FROM   t", "SELECT a FROM t"),
        ("SELECT anon_1.x, p0::VARCHAR FROM anon_1", "SELECT anon_1.x, p0::VARCHAR FROM anon_1"),
    ],
)
def test_normalize_sql(sql: str, expected: str) -> None:
    assert normalize_sql(sql) == expected


def test_in_lists_of_any_length_share_one_fingerprint() -> None:
    keys = {
        normalize_sql(f"SELECT x FROM t WHERE id IN ({', '.join(['?'] * n)}) AND y = ?")
        for n in range(1, 50)
    }
    assert len(keys) == 1


def test_normalized_sql_is_bounded() -> None:
    key = normalize_sql("SELECT " + ", ".join(f"c{i}" for i in range(5000)))
    assert len(key) == MAX_SQL_LENGTH
    assert key.endswith("…")


# -- queries and the statement table -----------------------------------------------------


def test_query_figures() -> None:
    metrics = make_metrics()
    for duration in (0.002, 0.004, 0.006):
        metrics.record_query("SELECT 1", duration)
    metrics.record_query("SELECT nope", 0.001, failed=True)
    metrics.record_error()
    snap = metrics.snapshot()
    assert_json(snap)
    queries = snap["queries"]
    assert queries["total"] == 4
    assert queries["errors"] == 2
    assert queries["total_seconds"] == pytest.approx(0.013)
    assert queries["avg_seconds"] == pytest.approx(0.00325)
    assert queries["min_seconds"] == pytest.approx(0.001)
    assert queries["max_seconds"] == pytest.approx(0.006)
    assert queries["p50_seconds"] is not None
    top = {row["statement"]: row for row in snap["statements"]["top"]}
    assert top["SELECT ?"]["calls"] == 3
    assert top["SELECT ?"]["mean_seconds"] == pytest.approx(0.004)
    assert top["SELECT ?"]["max_seconds"] == pytest.approx(0.006)
    assert top["SELECT nope"]["errors"] == 1


def test_empty_snapshot_is_json_and_has_the_contract_keys() -> None:
    snap = make_metrics().snapshot()
    assert_json(snap)
    assert snap["transactions"] == {
        "begun": 0,
        "committed": 0,
        "rolled_back": 0,
        "active": 0,
        "total_seconds": 0.0,
        "avg_seconds": None,
        "max_seconds": None,
        "p95_seconds": None,
    }
    assert snap["queries"]["min_seconds"] is None
    assert snap["pool"]["size"] is None  # not bound to a pool


def test_ten_thousand_distinct_statements_leave_the_table_at_its_bound() -> None:
    metrics = make_metrics()
    metrics.record_query("SELECT heavy FROM t", 5.0)  # a heavy hitter, recorded first
    for i in range(10_000):
        metrics.record_query(f"SELECT c{i} FROM t", 0.001)
    snap = metrics.snapshot(top=3)
    assert snap["statements"]["tracked"] == DEFAULT_MAX_STATEMENTS
    assert snap["statements"]["evicted"] == 10_001 - DEFAULT_MAX_STATEMENTS
    assert len(metrics.statements()) == DEFAULT_MAX_STATEMENTS
    assert snap["statements"]["top"][0]["statement"] == "SELECT heavy FROM t"
    assert len(snap["statements"]["top"]) == 3
    assert len(metrics._normalized) <= 2048


def test_statement_table_bound_is_configurable() -> None:
    metrics = make_metrics(max_statements=5)
    for i in range(100):
        metrics.record_query(f"SELECT c{i}", 0.001 * (i % 7))
    assert len(metrics.statements()) == 5
    with pytest.raises(ConfigurationError, match="at least 1"):
        make_metrics(max_statements=0)


# -- slow queries ----------------------------------------------------------------------


def test_slow_query_log_keeps_the_last_hundred(caplog: pytest.LogCaptureFixture) -> None:
    metrics = make_metrics(slow_query_threshold=0.5)
    metrics.record_query("SELECT fast", 0.1)
    with caplog.at_level(logging.WARNING, logger="asyncdb.slow_query"):
        for i in range(150):
            with audit_context(correlation_id=f"req-{i}"):
                metrics.record_query(f"SELECT slow_{i}", 0.5 + i / 1000)
    snap = metrics.snapshot()
    assert snap["slow_queries"]["count"] == 150
    recent = snap["slow_queries"]["recent"]
    assert len(recent) == 100
    assert recent[0]["sql"] == "SELECT slow_50"
    assert recent[-1]["correlation_id"] == "req-149"
    assert set(recent[-1]) >= {"sql", "duration", "time", "correlation_id"}
    records = [r for r in caplog.records if r.name == "asyncdb.slow_query"]
    assert len(records) == 150
    last = records[-1]
    assert last.levelno == logging.WARNING
    assert last.sql == "SELECT slow_149"  # type: ignore[attr-defined]
    assert last.correlation_id == "req-149"  # type: ignore[attr-defined]
    assert last.duration == pytest.approx(0.649)  # type: ignore[attr-defined]
    assert last.time == recent[-1]["time"]  # type: ignore[attr-defined]


def test_reset_zeroes_figures() -> None:
    metrics = make_metrics(slow_query_threshold=0.01)
    metrics.record_query("SELECT 1", 0.5)
    metrics.on_transaction_begin()
    metrics.on_transaction_end("commit", 0.2)
    metrics.on_checkout("record-1")
    metrics.reset()
    snap = metrics.snapshot()
    assert snap["queries"]["total"] == 0
    assert snap["slow_queries"]["recent"] == []
    assert snap["statements"]["tracked"] == 0
    assert snap["transactions"]["begun"] == 0
    assert snap["pool"]["checkouts"] == 0
    # a connection still out stays tracked
    assert snap["pool"]["longest_held_seconds"] is not None


# -- transactions ----------------------------------------------------------------------


def test_transactions() -> None:
    metrics = make_metrics()
    for _ in range(3):
        metrics.on_transaction_begin()
    metrics.on_transaction_end("commit", 0.010)
    metrics.on_transaction_end("rollback", 0.030)
    tx = metrics.snapshot()["transactions"]
    assert (tx["begun"], tx["committed"], tx["rolled_back"], tx["active"]) == (3, 1, 1, 1)
    assert tx["total_seconds"] == pytest.approx(0.04)
    assert tx["avg_seconds"] == pytest.approx(0.02)
    assert tx["max_seconds"] == pytest.approx(0.03)


def test_disabled_metrics_ignore_transactions() -> None:
    metrics = make_metrics(enabled=False)
    metrics.on_transaction_begin()
    metrics.on_transaction_end("commit", 0.1)
    snap = metrics.snapshot()
    assert snap["enabled"] is False
    assert snap["transactions"]["begun"] == 0


# -- leaks -----------------------------------------------------------------------------


def handler() -> None:
    """Stands in for the application code that checked a connection out."""


def test_leak_reported_once_by_the_watchdog_scan(caplog: pytest.LogCaptureFixture) -> None:
    metrics = make_metrics(leak_threshold=1.0)
    record = object()
    metrics.on_checkout(record, [(handler.__code__, 0)], "req-7")
    assert metrics.check_leaks() == 0
    at, where, cid = metrics._checked_out[record]
    metrics._checked_out[record] = (at - 5.0, where, cid)  # as if checked out 5 s ago
    with caplog.at_level(logging.WARNING, logger="asyncdb.connection_leak"):
        assert metrics.check_leaks() == 1
        assert metrics.check_leaks() == 0  # once per checkout
        metrics.on_checkin(record)  # returned later: not counted again
    snap = metrics.snapshot()
    assert snap["leaks"]["detected"] == 1
    assert snap["leaks"]["outstanding"] == 0
    (entry,) = [r for r in caplog.records if r.name == "asyncdb.connection_leak"]
    assert f"{__file__}:{handler.__code__.co_firstlineno} in handler" in entry.getMessage()
    assert entry.correlation_id == "req-7"  # type: ignore[attr-defined]
    assert entry.still_held is True  # type: ignore[attr-defined]


def test_leak_reported_at_checkin(caplog: pytest.LogCaptureFixture) -> None:
    metrics = make_metrics(leak_threshold=1.0)
    record = object()
    metrics.on_checkout(record, [(handler.__code__, 0)])
    at, where, cid = metrics._checked_out[record]
    metrics._checked_out[record] = (at - 2.0, where, cid)
    assert metrics.snapshot()["leaks"]["outstanding"] == 1
    with caplog.at_level(logging.WARNING, logger="asyncdb.connection_leak"):
        metrics.on_checkin(record)
    assert metrics.leaks_detected == 1
    (entry,) = [r for r in caplog.records if r.name == "asyncdb.connection_leak"]
    assert "was held for" in entry.getMessage()
    assert entry.still_held is False  # type: ignore[attr-defined]


def test_no_leak_tracking_without_a_threshold() -> None:
    metrics = make_metrics(leak_threshold=None)
    metrics.on_checkout(object(), [(handler.__code__, 0)])
    assert metrics.check_leaks() == 0
    assert metrics.snapshot()["leaks"]["outstanding"] == 0
    assert metrics.snapshot()["pool"]["checkouts"] == 1


def test_call_site_names_the_caller() -> None:
    def checkout_here() -> list[CallFrame]:
        return call_site()

    frames = checkout_here()
    assert 1 <= len(frames) <= 3
    described = describe_frames(frames)
    line = checkout_here.__code__.co_firstlineno + 1
    assert described[0] == f"{__file__}:{line} in checkout_here"
    assert not any("sqlalchemy" in frame for frame in described)
