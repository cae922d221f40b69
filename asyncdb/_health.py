"""HealthReport: what ``AsyncDatabaseManager.health_check()`` returns."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["HealthReport", "pool_status"]


@dataclasses.dataclass(frozen=True)
class HealthReport:
    """The outcome of one health probe. Never carries a password.

    ``healthy`` is True when ``SELECT 1`` answered within the timeout; otherwise
    ``error`` says why, in one secret-free line. Replicas do not decide ``healthy``
    (reads fall back to the primary); their state is in ``nodes``.
    """

    healthy: bool
    latency_ms: float | None
    backend: str
    url: str
    pool: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None
    #: With read replicas: one dict per node (role, healthy, lag, pool); else empty.
    nodes: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict of every field."""
        return dataclasses.asdict(self)


def pool_status(pool: Any) -> dict[str, Any]:
    """Size, checked-out, checked-in and overflow figures of a SQLAlchemy pool.

    A figure the pool class does not keep (``NullPool``, ``StaticPool``) is left out.
    QueuePool counts overflow from ``-size`` (unused capacity); only connections beyond
    the pool size are reported.
    """
    status: dict[str, Any] = {"class": type(pool).__name__}
    for key, method in (
        ("size", "size"),
        ("checked_out", "checkedout"),
        ("checked_in", "checkedin"),
        ("overflow", "overflow"),
    ):
        getter = getattr(pool, method, None)
        if callable(getter):
            status[key] = getter()
    if "overflow" in status:
        status["overflow"] = max(0, status["overflow"])
    return status
