"""``asyncdb bench``: asyncdb against the raw driver, SQLAlchemy Core and the bare ORM.

Every stack does the same request-shaped operations on the same uniquely named tables,
which the bench creates and always drops again. See ``docs/performance.md``.

Modules: ``_schema`` (tables and the safety check), ``_stacks`` and ``_raw`` (the
contenders), ``_workloads`` (what is measured), ``_runner`` (rounds and clean-up),
``_report`` (medians, ratios, targets), ``_progress``, ``_cli``.
"""

from __future__ import annotations

from ._cli import configure, run

__all__ = ["configure", "run"]
