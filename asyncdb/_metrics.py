"""Metrics: query, pool and transaction figures, kept in constant memory."""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Metrics"]


class Metrics:
    """Live figures of one manager; ``snapshot()`` gives a JSON-serializable dict."""

    def __init__(
        self,
        *,
        database: str = "default",
        slow_query_threshold: float = 1.0,
        leak_threshold: float | None = None,
        enabled: bool = True,
    ) -> None:
        self.database = database
        self.slow_query_threshold = slow_query_threshold
        self.leak_threshold = leak_threshold
        self.enabled = enabled
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self.transactions_begun = 0
            self.transactions_committed = 0
            self.transactions_rolled_back = 0

    # -- transaction hook (called by the unit of work) -------------------------------

    def on_transaction_begin(self) -> None:
        """A unit of work began a transaction."""
        self.transactions_begun += 1

    def on_transaction_end(self, outcome: str, duration: float) -> None:
        """A unit of work ended: ``outcome`` is ``"commit"`` or ``"rollback"``."""
        if outcome == "commit":
            self.transactions_committed += 1
        else:
            self.transactions_rolled_back += 1

    def snapshot(self) -> dict[str, Any]:
        """Every figure as a plain, JSON-serializable dict."""
        return {
            "database": self.database,
            "transactions": {
                "begun": self.transactions_begun,
                "committed": self.transactions_committed,
                "rolled_back": self.transactions_rolled_back,
            },
        }
