"""Read routing: which server runs a read, and what the toolkit knows about each replica.

The manager owns one :class:`Router` when ``replicas`` are configured. For every
read-only unit of work and standalone repository read it picks a node:

* **the primary** when the route is ``"primary"`` (per unit, per repository, or for a
  block with :func:`route_reads`), when this task committed a write less than
  ``sticky_after_write`` seconds ago (read-your-writes; the time of the last write is
  task-local state, see :func:`asyncdb._context.note_write`), or when no replica is usable;
* **a replica** otherwise, round robin over the usable ones. A replica is usable when its
  last probe succeeded, it is still in recovery (a promoted replica no longer follows the
  primary), and its replay lag is within ``max_replica_lag``.

Nothing here adds a round trip to a query. A background task probes each replica every
``replica_check_interval`` seconds (one ``SELECT`` for recovery state and replay lag); a
replica that refuses a connection during a read is marked down on the spot and skipped
for a backoff that doubles with each failure (capped), after which a probe or a read
tries it again and it rejoins when it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ._context import last_write, note_write
from ._errors import ConfigurationError
from ._health import pool_status

__all__ = ["ROUTES", "ReplicaNode", "Route", "Router", "route_reads"]

logger = logging.getLogger("asyncdb")

Route = Literal["auto", "primary", "replica"]
ROUTES: tuple[str, ...] = ("auto", "primary", "replica")
#: First and largest wait, in seconds, before a failed replica is tried again.
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0

# Replay lag as the standby sees it: zero when it has replayed all it received,
# otherwise the age of the last replayed transaction (an upper bound of the lag).
_PROBE = text(
    "SELECT pg_is_in_recovery(), CASE "
    "WHEN NOT pg_is_in_recovery() THEN 0.0 "
    "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0.0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 0.0) "
    "END::float8"
)

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "asyncdb_forced_route", default=None
)


def check_route(route: object) -> None:
    """Raise :class:`ConfigurationError` unless ``route`` is one of :data:`ROUTES`."""
    if route not in ROUTES:
        msg = f"route must be one of {', '.join(map(repr, ROUTES))} (got {route!r})."
        raise ConfigurationError(msg)


@contextlib.contextmanager
def route_reads(route: Route) -> Iterator[None]:
    """Route the reads of this block: ``"primary"``, ``"replica"`` or ``"auto"``.

    ::

        with route_reads("primary"):
            user = await users.get(user_id)   # reads its own, just-made change

    Applies to read-only units and standalone repository reads begun in the block
    (and in tasks it starts). A unit's or repository's own ``route=`` wins over it.
    """
    check_route(route)
    token = _forced.set(route)
    try:
        yield
    finally:
        _forced.reset(token)


class ReplicaNode:
    """One read replica: its engine and what the last probe or read learnt about it."""

    def __init__(self, name: str, url: str, engine: AsyncEngine, engines: dict[str, Any]) -> None:
        self.name = name
        #: The URL with its password masked.
        self.url = url
        self.engine = engine
        #: Option engines sharing the pool: ``read_only`` and ``autocommit``.
        self.engines = engines
        self.healthy = False
        self.in_recovery: bool | None = None
        self.lag: float | None = None
        self.error: str | None = "not probed yet"
        self.failures = 0
        self.retry_at = 0.0
        self.reads = 0
        self.checked_at: float | None = None

    def usable(self, now: float, max_lag: float | None) -> bool:
        """May a read run here now? A node in backoff is tried again once it expired."""
        if not self.healthy:
            return now >= self.retry_at and self.failures > 0
        if self.in_recovery is False:
            return False
        return max_lag is None or self.lag is None or self.lag <= max_lag

    def mark_down(self, now: float, reason: str) -> None:
        """Skip this node for a backoff that doubles with each failure in a row."""
        self.failures += 1
        delay = min(BACKOFF_BASE * 2 ** (self.failures - 1), BACKOFF_CAP)
        if self.healthy:
            logger.warning(
                "Replica %s is unavailable (%s); reads skip it for %.1f s", self.url, reason, delay
            )
        self.healthy = False
        self.error = reason
        self.retry_at = now + delay

    def mark_up(self, now: float, in_recovery: bool, lag: float) -> None:
        """Record a successful probe."""
        if not self.healthy and self.failures:
            logger.info("Replica %s is available again", self.url)
        self.healthy = True
        self.failures = 0
        self.error = None if in_recovery else "not in recovery (promoted?): not used for reads"
        self.in_recovery = in_recovery
        self.lag = max(0.0, lag)
        self.checked_at = now

    def pool_status(self) -> dict[str, Any]:
        """Size and checkout figures of this node's pool."""
        return pool_status(self.engine.sync_engine.pool)

    def snapshot(self, max_lag: float | None) -> dict[str, Any]:
        """Role, health, lag, reads and pool figures, as a plain dict."""
        return {
            "name": self.name,
            "role": "replica",
            "url": self.url,
            "healthy": self.healthy,
            "in_recovery": self.in_recovery,
            "lag_seconds": None if self.lag is None else round(self.lag, 3),
            "lag_ok": max_lag is None or self.lag is None or self.lag <= max_lag,
            "reads": self.reads,
            "failures": self.failures,
            "error": self.error,
            "pool": self.pool_status(),
        }


class Router:
    """Picks the node for each read and keeps each replica's state current."""

    def __init__(
        self,
        nodes: list[ReplicaNode],
        *,
        sticky_after_write: float,
        max_lag: float | None,
        check_interval: float,
        probe_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Monotonic seconds; replaceable in tests.
        self.nodes = nodes
        self.sticky_after_write = sticky_after_write
        self.max_lag = max_lag
        self.check_interval = check_interval
        self.probe_timeout = probe_timeout
        self.clock = clock
        self._turn = itertools.count()
        self._monitor: asyncio.Task[None] | None = None
        #: Reads sent to the primary although replicas exist, by reason.
        self.primary_reads: dict[str, int] = {"sticky": 0, "forced": 0, "no_replica": 0}

    # -- choosing --------------------------------------------------------------------

    def choose(self, route: Route = "auto") -> ReplicaNode | None:
        """The replica for a read on ``route``, or None for the primary. No I/O."""
        if route == "auto":
            forced = _forced.get()
            if forced is not None:
                route = forced  # type: ignore[assignment]
        if route == "primary":
            self.primary_reads["forced"] += 1
            return None
        now = self.clock()
        if route == "auto" and self.sticky_after_write > 0:
            last = last_write(self)
            if last is not None and now - last < self.sticky_after_write:
                self.primary_reads["sticky"] += 1
                return None
        count = len(self.nodes)
        start = next(self._turn)
        for offset in range(count):
            node = self.nodes[(start + offset) % count]
            if node.usable(now, self.max_lag):
                node.reads += 1
                return node
        self.primary_reads["no_replica"] += 1
        return None

    def note_write(self) -> None:
        """This task committed a write: its reads stay on the primary for a while."""
        note_write(self, self.clock())

    def failed(self, node: ReplicaNode, exc: BaseException) -> None:
        """A read could not reach ``node``: skip it with backoff."""
        node.reads -= 1
        node.mark_down(self.clock(), type(exc).__name__)

    # -- probing ---------------------------------------------------------------------

    async def probe(self, node: ReplicaNode) -> None:
        """One round trip: is ``node`` up, still a standby, and how far behind?"""
        try:
            row = await asyncio.wait_for(_probe_once(node), self.probe_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            node.mark_down(self.clock(), type(exc).__name__)
            return
        node.mark_up(self.clock(), bool(row[0]), float(row[1]))

    async def probe_all(self) -> None:
        """Probe every replica due for it, concurrently."""
        now = self.clock()
        due = [node for node in self.nodes if node.healthy or now >= node.retry_at]
        if due:
            await asyncio.gather(*(self.probe(node) for node in due))

    def start(self) -> None:
        """Start the background probe loop on the running event loop."""
        if self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(
                self._watch(), name="asyncdb-replica-monitor"
            )

    async def stop(self) -> None:
        """Stop the probe loop and wait for it to end."""
        task, self._monitor = self._monitor, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                await self.probe_all()
            except Exception:  # the loop must outlive any surprise
                logger.exception("The replica monitor failed; it keeps running")

    def snapshot(self) -> dict[str, Any]:
        """Per-replica figures and the reasons reads went to the primary."""
        return {
            "replicas": [node.snapshot(self.max_lag) for node in self.nodes],
            "primary_reads": dict(self.primary_reads),
            "sticky_after_write": self.sticky_after_write,
            "max_replica_lag": self.max_lag,
        }


async def _probe_once(node: ReplicaNode) -> Any:
    async with node.engines["autocommit"].connect() as conn:
        return (await conn.execute(_PROBE)).one()
