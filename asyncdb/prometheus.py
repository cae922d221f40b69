"""Prometheus export of asyncdb metrics (install the ``prometheus`` extra).

:class:`AsyncDBCollector` is a custom collector for ``prometheus_client``: it reads the
live :class:`~asyncdb.Metrics` of one or more managers at scrape time, one ``database``
label per manager::

    from prometheus_client import start_http_server
    from asyncdb.prometheus import AsyncDBCollector

    AsyncDBCollector(db)          # registers itself in prometheus_client.REGISTRY
    start_http_server(9100)

Exported series (every one labelled ``database``):

==========================================  =========  ================================
name                                        type       meaning
==========================================  =========  ================================
``asyncdb_queries_total``                   counter    statements executed
``asyncdb_query_errors_total``              counter    statements (or COMMITs) that failed
``asyncdb_query_duration_seconds``          histogram  statement latency
``asyncdb_slow_queries_total``              counter    statements over the slow threshold
``asyncdb_statements_evicted_total``        counter    statements dropped from the bounded table
``asyncdb_pool_size``                       gauge      connections the pool keeps
``asyncdb_pool_checked_out``                gauge      connections in use now
``asyncdb_pool_checked_in``                 gauge      idle connections in the pool
``asyncdb_pool_overflow``                   gauge      overflow connections (negative: room left)
``asyncdb_pool_checkouts_total``            counter    connections handed out
``asyncdb_pool_checkout_timeouts_total``    counter    checkouts that hit ``pool_timeout``
``asyncdb_pool_checkout_wait_seconds``      histogram  time to obtain a connection
``asyncdb_pool_connections_opened_total``   counter    connections opened
``asyncdb_pool_connections_closed_total``   counter    connections closed
``asyncdb_pool_connections_invalidated_total``  counter  connections invalidated
``asyncdb_pool_leaked_connections``         gauge      connections out past ``leak_threshold`` now
``asyncdb_connection_leaks_total``          counter    leaks reported
``asyncdb_transactions_total``              counter    units of work ended, by ``outcome``
``asyncdb_transactions_active``             gauge      units of work open now
``asyncdb_transaction_duration_seconds``    histogram  unit-of-work duration
==========================================  =========  ================================

A ``Metrics.reset()`` reads as a counter reset. No SQL text, parameter value or URL is
exported.
"""

from __future__ import annotations

from typing import Any

try:
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    msg = (
        "asyncdb.prometheus needs prometheus_client. "
        "Install it with: pip install 'asyncdb-toolkit[prometheus]'."
    )
    raise ImportError(msg) from exc

from ._errors import ConfigurationError
from ._manager import AsyncDatabaseManager
from ._metrics import LatencyHistogram, Metrics

__all__ = ["DURATION_BUCKETS", "AsyncDBCollector", "render"]

#: ``le`` boundaries of the exported histograms, in seconds (a subset of the internal
#: buckets, so every exported count is exact).
DURATION_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0,
)  # fmt: skip

_LABELS = ["database"]

_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("asyncdb_queries", "Statements executed, including executemany batches.", "queries"),
    ("asyncdb_query_errors", "Statements or COMMITs that raised.", "errors"),
    ("asyncdb_slow_queries", "Statements slower than slow_query_threshold.", "slow_query_count"),
    (
        "asyncdb_statements_evicted",
        "Normalized statements dropped from the bounded per-statement table.",
        "statements_evicted",
    ),
    ("asyncdb_pool_checkouts", "Connections handed out by the pool.", "checkouts"),
    (
        "asyncdb_pool_checkout_timeouts",
        "Checkouts that waited pool_timeout and failed.",
        "checkout_timeouts",
    ),
    ("asyncdb_pool_connections_opened", "Connections the pool opened.", "connections_opened"),
    ("asyncdb_pool_connections_closed", "Connections the pool closed.", "connections_closed"),
    (
        "asyncdb_pool_connections_invalidated",
        "Connections invalidated (dropped as broken or stale).",
        "connections_invalidated",
    ),
    (
        "asyncdb_connection_leaks",
        "Connections reported as held longer than leak_threshold.",
        "leaks_detected",
    ),
)
_POOL_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("asyncdb_pool_size", "Connections the pool keeps open.", "size"),
    ("asyncdb_pool_checked_out", "Connections checked out of the pool now.", "checked_out"),
    ("asyncdb_pool_checked_in", "Idle connections in the pool now.", "checked_in"),
    (
        "asyncdb_pool_overflow",
        "Overflow connections open beyond pool_size (negative: unused pool slots).",
        "overflow",
    ),
)
_HISTOGRAMS: tuple[tuple[str, str, str], ...] = (
    ("asyncdb_query_duration_seconds", "Statement execution time.", "query_latency"),
    (
        "asyncdb_pool_checkout_wait_seconds",
        "Time to obtain a connection from the pool (waiting, connecting, liveness check).",
        "checkout_wait",
    ),
    (
        "asyncdb_transaction_duration_seconds",
        "Duration of units of work, begin to commit or rollback.",
        "transaction_duration",
    ),
)


class AsyncDBCollector:
    """A ``prometheus_client`` collector over the metrics of one or more managers.

    ``sources`` are :class:`~asyncdb.AsyncDatabaseManager` or :class:`~asyncdb.Metrics`
    objects; the ``database`` label is ``Metrics.database`` unless :meth:`add` is given
    another. With ``registry=None`` the collector does not register itself.
    """

    def __init__(
        self,
        *sources: AsyncDatabaseManager | Metrics,
        registry: Any = REGISTRY,
    ) -> None:
        self._sources: dict[str, Metrics] = {}
        for source in sources:
            self.add(source)
        if registry is not None:
            registry.register(self)

    def add(self, source: AsyncDatabaseManager | Metrics, *, database: str | None = None) -> None:
        """Export ``source`` too, labelled ``database`` (default: its database name)."""
        metrics = source.metrics if isinstance(source, AsyncDatabaseManager) else source
        label = database if database is not None else metrics.database
        if label in self._sources and self._sources[label] is not metrics:
            msg = (
                f"Another source already exports database={label!r}. "
                "Pass a distinct label with add(source, database='...')."
            )
            raise ConfigurationError(msg)
        self._sources[label] = metrics

    def remove(self, source: AsyncDatabaseManager | Metrics) -> None:
        """Stop exporting ``source`` (a manager that is disposed, say)."""
        metrics = source.metrics if isinstance(source, AsyncDatabaseManager) else source
        for label in [k for k, v in self._sources.items() if v is metrics]:
            del self._sources[label]

    def describe(self) -> list[Any]:
        """The metric families, without samples (used by the registry at register time)."""
        return _Families().all()

    def collect(self) -> list[Any]:
        """Every family with one sample set per source, read now."""
        families = _Families()
        for label, metrics in list(self._sources.items()):
            families.add(label, metrics)
        return families.all()


class _Families:
    """One scrape's metric families."""

    def __init__(self) -> None:
        self.counters = [
            CounterMetricFamily(name, doc, labels=_LABELS) for name, doc, _ in _COUNTERS
        ]
        self.transactions = CounterMetricFamily(
            "asyncdb_transactions",
            "Units of work ended, by outcome (commit or rollback).",
            labels=[*_LABELS, "outcome"],
        )
        self.pool = [GaugeMetricFamily(name, doc, labels=_LABELS) for name, doc, _ in _POOL_GAUGES]
        self.leaked = GaugeMetricFamily(
            "asyncdb_pool_leaked_connections",
            "Connections checked out longer than leak_threshold right now.",
            labels=_LABELS,
        )
        self.active = GaugeMetricFamily(
            "asyncdb_transactions_active", "Units of work open now.", labels=_LABELS
        )
        self.histograms = [
            HistogramMetricFamily(name, doc, labels=_LABELS) for name, doc, _ in _HISTOGRAMS
        ]

    def add(self, label: str, metrics: Metrics) -> None:
        labels = [label]
        for counter, (_, _, attribute) in zip(self.counters, _COUNTERS, strict=True):
            counter.add_metric(labels, _counter(metrics, attribute))
        for outcome, value in (
            ("commit", metrics.transactions_committed),
            ("rollback", metrics.transactions_rolled_back),
        ):
            self.transactions.add_metric([label, outcome], value)
        pool = metrics.pool_snapshot()
        for gauge, (_, _, key) in zip(self.pool, _POOL_GAUGES, strict=True):
            if pool.get(key) is not None:
                gauge.add_metric(labels, pool[key])
        self.leaked.add_metric(labels, metrics.leaked_connections())
        ended = metrics.transactions_committed + metrics.transactions_rolled_back
        self.active.add_metric(labels, max(0, metrics.transactions_begun - ended))
        for histogram, (_, _, attribute) in zip(self.histograms, _HISTOGRAMS, strict=True):
            hist: LatencyHistogram = getattr(metrics, attribute)
            cumulative, count, total = hist.cumulative(DURATION_BUCKETS)
            buckets = [(repr(bound), float(n)) for bound, n in cumulative]
            buckets.append(("+Inf", float(count)))
            histogram.add_metric(labels, buckets, total)

    def all(self) -> list[Any]:
        return [
            *self.counters,
            self.transactions,
            *self.pool,
            self.leaked,
            self.active,
            *self.histograms,
        ]


def _counter(metrics: Metrics, attribute: str) -> float:
    if attribute == "queries":
        return metrics.query_latency.count
    value: float = getattr(metrics, attribute)
    return value


def render(*sources: AsyncDatabaseManager | Metrics) -> str:
    """The Prometheus text exposition of ``sources`` alone (not the global registry)."""
    registry = CollectorRegistry(auto_describe=True)
    AsyncDBCollector(*sources, registry=registry)
    text: bytes = generate_latest(registry)
    return text.decode("utf-8")
