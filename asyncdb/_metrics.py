"""Metrics: query, pool and transaction figures, kept in constant memory.

:class:`Metrics` is fed by the engine and pool hooks of :mod:`asyncdb._instrument` and by
the unit of work (``on_transaction_begin`` / ``on_transaction_end``); ``snapshot()`` turns
it into a plain, JSON-serializable dict.

Memory stays constant whatever the number of queries: latencies go into fixed-bucket
histograms (:class:`LatencyHistogram`), the slow-query log keeps the last
``slow_query_log_size`` entries, and the per-statement table holds at most
``max_statements`` normalized statements.

Why the hot path takes no lock: every recording method runs on the event-loop thread.
SQLAlchemy's asyncio layer runs the synchronous engine inside greenlets that the loop's
own thread switches into, and its events fire there; aiosqlite does its sqlite3 work on
a worker thread, but SQLAlchemy awaits that work and fires the events back on the loop
side (``tests/integration/test_metrics.py`` checks this on every backend). A recording
method never awaits, so no other task runs in the middle of one: the increments cannot
interleave. Readers on other threads (a Prometheus HTTP server thread, say) copy
containers in a single C-level call (``list(d.values())``), which the GIL makes atomic;
at worst they see one query's figures half recorded. The one path that may run on
another thread is the pool's garbage-collection clean-up of a connection that was never
returned, which can lose an increment of a counter, nothing more.
"""

from __future__ import annotations

import collections
import heapq
import logging
import re
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from types import CodeType
from typing import Any

from ._context import get_audit_context
from ._errors import ConfigurationError
from ._histogram import BUCKET_BOUNDS, LatencyHistogram, _round

__all__ = [
    "BUCKET_BOUNDS",
    "DEFAULT_MAX_STATEMENTS",
    "DEFAULT_SLOW_QUERY_LOG_SIZE",
    "CallFrame",
    "LatencyHistogram",
    "Metrics",
    "describe_frames",
    "normalize_sql",
]

slow_query_logger = logging.getLogger("asyncdb.slow_query")
leak_logger = logging.getLogger("asyncdb.connection_leak")

#: Distinct normalized statements the per-statement table holds at most.
DEFAULT_MAX_STATEMENTS = 1000
#: Entries the slow-query log keeps (the most recent ones).
DEFAULT_SLOW_QUERY_LOG_SIZE = 100
#: Statements shown by ``snapshot()`` under ``statements.top``.
DEFAULT_TOP_STATEMENTS = 10
#: Longest SQL text stored (slow log, statement table); longer text is cut with "…".
MAX_SQL_LENGTH = 2000
_NORMALIZE_CACHE_SIZE = 2048

# -- SQL normalization -----------------------------------------------------------------

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBERED_PARAM = re.compile(r"\$\d+|%\(\w+\)s|%s|(?<![:\w]):\w+")
_NUMBER = re.compile(r"(?<![\w$.])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")
# One value in a list once literals and parameters are "?": "?", "?::INTEGER", "?::NUMERIC(?, ?)".
_ITEM = r"\?(?:\s*::\s*[A-Za-z_][\w ]*?(?:\(\s*\?(?:\s*,\s*\?)*\s*\))?(?:\[\])*)?"
_TUPLE = rf"\(\s*{_ITEM}(?:\s*,\s*{_ITEM})*\s*\)"
_IN_LIST = re.compile(rf"\bIN\s*{_TUPLE}", re.IGNORECASE)
_VALUES_ROWS = re.compile(rf"({_TUPLE})(?:\s*,\s*{_TUPLE})+")
_SPACE = re.compile(r"\s+")


def normalize_sql(sql: str) -> str:
    """The statement's fingerprint: literals and parameters as ``?``, lists collapsed.

    ::

        >>> normalize_sql("SELECT * FROM t WHERE a = 'x' AND id IN ($1, $2, $3)")
        'SELECT * FROM t WHERE a = ? AND id IN (...)'

    Multi-row ``VALUES`` lists keep their first row, so batches of any size share one
    fingerprint. The result is cut to ``MAX_SQL_LENGTH`` characters.
    """
    text = _STRING.sub("?", sql)
    text = _NUMBERED_PARAM.sub("?", text)
    text = _NUMBER.sub("?", text)
    text = _IN_LIST.sub("IN (...)", text)
    text = _VALUES_ROWS.sub(r"\1, ...", text)
    return _truncate(_SPACE.sub(" ", text).strip())


def _truncate(sql: str) -> str:
    return sql if len(sql) <= MAX_SQL_LENGTH else sql[: MAX_SQL_LENGTH - 1] + "…"


#: One frame of a checkout's call site as captured: (code object, bytecode offset).
#: Resolving the line number waits until a leak is reported (see :func:`describe_frames`).
CallFrame = tuple[CodeType, int]


def describe_frames(frames: Sequence[CallFrame]) -> list[str]:
    """``["path/app.py:12 in handler", ...]`` for captured frames."""
    return [
        f"{code.co_filename}:{_line_of(code, offset)} in {code.co_name}" for code, offset in frames
    ]


def _line_of(code: CodeType, offset: int) -> int:
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return line
    return code.co_firstlineno


# Per-statement entry: [calls, total seconds, max seconds, errors].
_CALLS, _TOTAL, _MAX, _ERRORS = range(4)


# A connection out of the pool: (monotonic checkout time, call site, correlation id).
_Checkout = tuple[float, Sequence[CallFrame], str | None]


class Metrics:
    """Live figures of one manager; ``snapshot()`` gives a JSON-serializable dict.

    ::

        snap = db.metrics.snapshot()
        snap["queries"]["p95_seconds"], snap["slow_queries"]["count"]
        db.metrics.reset()

    The manager creates one per database and the instrumentation feeds it; the
    ``record_*`` and ``on_*`` methods are what the hooks call.
    """

    def __init__(
        self,
        *,
        database: str = "default",
        slow_query_threshold: float = 1.0,
        leak_threshold: float | None = None,
        enabled: bool = True,
        max_statements: int = DEFAULT_MAX_STATEMENTS,
        slow_query_log_size: int = DEFAULT_SLOW_QUERY_LOG_SIZE,
    ) -> None:
        if max_statements < 1 or slow_query_log_size < 1:
            msg = "max_statements and slow_query_log_size must be at least 1."
            raise ConfigurationError(msg)
        self.database = database
        self.slow_query_threshold = slow_query_threshold
        self.leak_threshold = leak_threshold
        self.enabled = enabled
        self.max_statements = max_statements
        self.slow_query_log_size = slow_query_log_size
        self._normalized: dict[str, str] = {}
        # Connections out of the pool: live state, which reset() keeps.
        self._checked_out: dict[object, _Checkout] = {}
        self._warned: set[object] = set()  # checkouts already reported as leaks
        self._pool_status: Callable[[], dict[str, Any]] | None = None
        # Extra snapshot sections other layers provide (the repository cache).
        self._sections: dict[str, Callable[[], dict[str, Any]]] = {}
        self.reset()

    def reset(self) -> None:
        """Zero every counter, histogram, the slow-query log and the statement table.

        Connections currently out of the pool stay tracked for leak detection.
        """
        self.reset_at = time.time()
        self.errors = 0
        self.query_latency = LatencyHistogram()
        self.slow_query_count = 0
        self._slow: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=self.slow_query_log_size
        )
        self._statements: dict[str, list[Any]] = {}
        self._eviction_queue: list[str] = []
        self.statements_evicted = 0
        self.checkouts = 0
        self.checkout_timeouts = 0
        self.checkout_wait = LatencyHistogram()
        self.connections_opened = 0
        self.connections_closed = 0
        self.connections_invalidated = 0
        self.leaks_detected = 0
        self.transactions_begun = 0
        self.transactions_committed = 0
        self.transactions_rolled_back = 0
        self.transaction_duration = LatencyHistogram()

    # -- queries (called by the statement hooks) -------------------------------------

    def record_query(self, statement: str, duration: float, failed: bool = False) -> None:
        """Record one executed statement (``failed`` when it raised)."""
        hist = self.query_latency
        hist.counts[bisect_left(BUCKET_BOUNDS, duration)] += 1
        hist.count += 1
        hist.sum += duration
        if duration > hist.max:
            hist.max = duration
        if duration < hist.min:
            hist.min = duration
        key = self._normalized.get(statement)
        if key is None:
            key = self._normalize(statement)
        entry = self._statements.get(key)
        if entry is None:
            entry = self._add_statement(key)
        entry[_CALLS] += 1
        entry[_TOTAL] += duration
        if duration > entry[_MAX]:
            entry[_MAX] = duration
        if failed:
            self.errors += 1
            entry[_ERRORS] += 1
        if duration >= self.slow_query_threshold:
            self._record_slow(statement, duration, failed)

    def record_error(self) -> None:
        """Record an error that no timed statement carries (a failed COMMIT, say)."""
        self.errors += 1

    def _normalize(self, statement: str) -> str:
        cache = self._normalized
        if len(cache) >= _NORMALIZE_CACHE_SIZE:
            cache.clear()
        key = cache[statement] = normalize_sql(statement)
        return key

    def _add_statement(self, key: str) -> list[Any]:
        table = self._statements
        if len(table) >= self.max_statements:
            self._evict_one()
        entry: list[Any] = [0, 0.0, 0.0, 0]
        table[key] = entry
        return entry

    def _evict_one(self) -> None:
        # Evict the statement with the least total time. Finding it costs a scan of the
        # table, so one scan picks the lowest tenth and later evictions pop from that
        # list: O(log n) amortized, and newcomers get a grace period before they compete.
        table = self._statements
        queue = self._eviction_queue
        while True:
            if not queue:
                batch = max(1, self.max_statements // 10)
                lowest = heapq.nsmallest(batch, table.items(), key=lambda kv: kv[1][_TOTAL])
                queue.extend(key for key, _ in reversed(lowest))
            victim = queue.pop()
            if table.pop(victim, None) is not None:
                self.statements_evicted += 1
                return

    def _record_slow(self, statement: str, duration: float, failed: bool) -> None:
        self.slow_query_count += 1
        entry: dict[str, Any] = {
            "sql": _truncate(statement),
            "duration": round(duration, 6),
            "time": datetime.now(timezone.utc).isoformat(),
            "correlation_id": get_audit_context().correlation_id,
            "database": self.database,
            "error": failed,
        }
        self._slow.append(entry)
        slow_query_logger.warning(
            "Slow query on %s: %.3f s (threshold %g s, correlation_id=%s): %s",
            self.database,
            duration,
            self.slow_query_threshold,
            entry["correlation_id"],
            entry["sql"],
            extra=dict(entry),
        )

    def slow_queries(self) -> list[dict[str, Any]]:
        """The slow-query log, oldest first: ``sql``, ``duration``, ``time``, ``correlation_id``."""
        return [dict(entry) for entry in list(self._slow)]

    def statements(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Per-statement figures, most total time first (all of them when ``limit`` is None)."""
        rows = list(self._statements.items())
        rows.sort(key=lambda kv: kv[1][_TOTAL], reverse=True)
        return [
            {
                "statement": key,
                "calls": calls,
                "errors": errors,
                "total_seconds": _round(total),
                "mean_seconds": _round(total / calls) if calls else None,
                "max_seconds": _round(longest),
            }
            for key, (calls, total, longest, errors) in rows[:limit]
        ]

    # -- pool (called by the pool hooks) ---------------------------------------------

    def bind_pool(self, status: Callable[[], dict[str, Any]] | None) -> None:
        """Set the function that reads the pool's gauges (None when not connected)."""
        self._pool_status = status

    def on_connect(self) -> None:
        """The pool opened a new connection."""
        self.connections_opened += 1

    def on_close(self) -> None:
        """The pool closed a connection."""
        self.connections_closed += 1

    def on_invalidate(self) -> None:
        """A connection was invalidated (it will be replaced)."""
        self.connections_invalidated += 1

    def record_checkout_wait(self, seconds: float, timed_out: bool = False) -> None:
        """Time a caller spent obtaining a connection from the pool."""
        self.checkout_wait.record(seconds)
        if timed_out:
            self.checkout_timeouts += 1

    def on_checkout(
        self, record: object, where: Sequence[CallFrame] = (), correlation_id: str | None = None
    ) -> None:
        """A connection left the pool; ``where`` is the short stack of the call site."""
        self.checkouts += 1
        if self.leak_threshold is not None:
            self._checked_out[record] = (time.monotonic(), where, correlation_id)

    def on_checkin(self, record: object) -> None:
        """A connection came back to the pool (or was detached from it)."""
        checkout = self._checked_out.pop(record, None)
        if checkout is None:
            return
        if self._warned and record in self._warned:
            self._warned.discard(record)
            return
        threshold = self.leak_threshold
        held = time.monotonic() - checkout[0]
        if threshold is not None and held > threshold:
            self._report_leak(record, checkout, held, still_held=False)

    def check_leaks(self) -> int:
        """Warn about connections held past ``leak_threshold``, once each; returns how many."""
        threshold = self.leak_threshold
        if threshold is None:
            return 0
        now = time.monotonic()
        found = 0
        for record, checkout in list(self._checked_out.items()):
            if now - checkout[0] > threshold and record not in self._warned:
                self._report_leak(record, checkout, now - checkout[0], still_held=True)
                found += 1
        return found

    def leaked_connections(self) -> int:
        """Connections out of the pool longer than ``leak_threshold`` right now."""
        threshold = self.leak_threshold
        if threshold is None:
            return 0
        now = time.monotonic()
        return sum(1 for c in list(self._checked_out.values()) if now - c[0] > threshold)

    def _report_leak(
        self, record: object, checkout: _Checkout, held: float, still_held: bool
    ) -> None:
        if still_held:
            self._warned.add(record)
        self.leaks_detected += 1
        _, where, correlation_id = checkout
        frames = describe_frames(where)
        state = "has been checked out for" if still_held else "was held for"
        leak_logger.warning(
            "Possible connection leak on %s: a connection %s %.1f s (leak_threshold %g s; "
            "correlation_id=%s). Close sessions and connections with `async with`. "
            "It was checked out at:\n%s",
            self.database,
            state,
            held,
            self.leak_threshold,
            correlation_id,
            "\n".join(f"  {frame}" for frame in frames) or "  (unknown)",
            extra={
                "database": self.database,
                "held_seconds": round(held, 3),
                "still_held": still_held,
                "checked_out_at": frames,
                "correlation_id": correlation_id,
            },
        )

    # -- transactions (called by the unit of work) -----------------------------------

    def on_transaction_begin(self) -> None:
        """A unit of work began a transaction."""
        if self.enabled:
            self.transactions_begun += 1

    def on_transaction_end(self, outcome: str, duration: float) -> None:
        """A unit of work ended: ``outcome`` is ``"commit"`` or ``"rollback"``."""
        if not self.enabled:
            return
        if outcome == "commit":
            self.transactions_committed += 1
        else:
            self.transactions_rolled_back += 1
        self.transaction_duration.record(duration)

    # -- reading ---------------------------------------------------------------------

    def pool_snapshot(self) -> dict[str, Any]:
        """Pool gauges (when connected) and counters."""
        status = self._pool_status
        gauges = status() if status is not None else {}
        now = time.monotonic()
        held = [now - checkout[0] for checkout in list(self._checked_out.values())]
        wait = self.checkout_wait
        return {
            "class": gauges.get("class"),
            "size": gauges.get("size"),
            "checked_out": gauges.get("checked_out"),
            "checked_in": gauges.get("checked_in"),
            "overflow": gauges.get("overflow"),
            "checkouts": self.checkouts,
            "checkout_timeouts": self.checkout_timeouts,
            "checkout_wait": {
                "total_seconds": _round(wait.sum),
                "avg_seconds": _round(wait.sum / wait.count) if wait.count else None,
                "max_seconds": _round(wait.max) if wait.count else None,
                "p95_seconds": _round(wait.percentile(0.95)),
            },
            "connections_opened": self.connections_opened,
            "connections_closed": self.connections_closed,
            "connections_invalidated": self.connections_invalidated,
            "longest_held_seconds": _round(max(held)) if held else None,
        }

    def snapshot(self, top: int = DEFAULT_TOP_STATEMENTS) -> dict[str, Any]:
        """Every figure as a plain, JSON-serializable dict (durations in seconds).

        ``statements.top`` lists the ``top`` statements with the most total time.
        """
        queries = self.query_latency.summary()
        transactions = self.transaction_duration.summary()
        return {
            "database": self.database,
            "enabled": self.enabled,
            "since": datetime.fromtimestamp(self.reset_at, timezone.utc).isoformat(),
            "queries": {
                "total": queries.pop("count"),
                "errors": self.errors,
                **queries,
            },
            "slow_queries": {
                "threshold_seconds": self.slow_query_threshold,
                "count": self.slow_query_count,
                "recent": self.slow_queries(),
            },
            "statements": {
                "tracked": len(self._statements),
                "max": self.max_statements,
                "evicted": self.statements_evicted,
                "top": self.statements(top),
            },
            "pool": self.pool_snapshot(),
            "leaks": {
                "threshold_seconds": self.leak_threshold,
                "detected": self.leaks_detected,
                "outstanding": self.leaked_connections(),
            },
            "transactions": {
                "begun": self.transactions_begun,
                "committed": self.transactions_committed,
                "rolled_back": self.transactions_rolled_back,
                "active": max(
                    0,
                    self.transactions_begun
                    - self.transactions_committed
                    - self.transactions_rolled_back,
                ),
                "total_seconds": transactions["total_seconds"],
                "avg_seconds": transactions["avg_seconds"],
                "max_seconds": transactions["max_seconds"],
                "p95_seconds": transactions["p95_seconds"],
            },
            **{name: provider() for name, provider in self._sections.items()},
        }

    def add_section(self, name: str, provider: Callable[[], dict[str, Any]]) -> None:
        """Include ``provider()`` under ``name`` in every :meth:`snapshot`.

        A layer that keeps its own figures (the repository cache) registers here once;
        registering the same name again replaces the provider.
        """
        self._sections[name] = provider

    def __repr__(self) -> str:
        return (
            f"<Metrics {self.database} queries={self.query_latency.count} "
            f"errors={self.errors} slow={self.slow_query_count}>"
        )
