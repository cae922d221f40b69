"""The one capability table: which backend supports which feature, and why not.

Code asks :func:`supports` (or :func:`require`, which raises a clear
:class:`~asyncdb.UnsupportedFeatureError`); the test suite skips a backend only where this
table says ✗, with its reason; docs/backends.md shows :func:`render_markdown`'s output
(a test checks the page matches).
"""

from __future__ import annotations

import dataclasses

from ._errors import UnsupportedFeatureError

__all__ = ["BACKENDS", "FEATURES", "Capability", "render_markdown", "require", "supports"]

#: Backend names as ``DatabaseSettings.backend`` reports them, with their display names.
BACKENDS = {
    "sqlite": "SQLite",
    "postgresql": "PostgreSQL",
    "mysql": "MariaDB/MySQL",
    "duckdb": "DuckDB",
}


@dataclasses.dataclass(frozen=True)
class Capability:
    """One cell: supported or not, and the reason (or the way it is done)."""

    supported: bool
    note: str = ""


_YES = Capability(True)

#: feature -> (description, {backend: Capability}); a backend left out is supported.
FEATURES: dict[str, tuple[str, dict[str, Capability]]] = {
    "savepoint": (
        "SAVEPOINTs: `uow.savepoint()`, nested units of work, per-call atomicity inside a unit",
        {
            "duckdb": Capability(
                False,
                "DuckDB has no SAVEPOINT; asyncdb raises UnsupportedFeatureError naming it. "
                "A failed statement aborts the whole transaction instead.",
            ),
        },
    ),
    "isolation_levels": (
        "`isolation_level=` on units of work and `run_tx`",
        {
            "sqlite": Capability(False, "SQLite transactions are always serializable."),
            "duckdb": Capability(False, "DuckDB transactions always run under snapshot isolation."),
        },
    ),
    "blocking_locks": (
        "a writer waits for another's conflicting write (row locks, `SELECT ... FOR UPDATE`, "
        "SQLite's write lock), so a read-modify-write loses no update without retries",
        {
            "sqlite": Capability(True, "BEGIN IMMEDIATE: one writer at a time."),
            "duckdb": Capability(
                False,
                "DuckDB has no row locks (FOR UPDATE is ignored); a write-write conflict "
                "aborts the later transaction instead, which run_tx retries.",
            ),
        },
    ),
    "upsert": (
        "`upsert` / `bulk_upsert`",
        {
            "mysql": Capability(
                True, "INSERT ... ON DUPLICATE KEY UPDATE, then a SELECT of the row."
            ),
        },
    ),
    "update_returning": (
        "UPDATE ... RETURNING (`update` in one statement)",
        {
            "mysql": Capability(
                False, "MariaDB/MySQL have no UPDATE ... RETURNING; asyncdb reads the row back."
            ),
        },
    ),
    "statement_timeout": (
        "`statement_timeout` enforced by the server",
        {
            "sqlite": Capability(False, "SQLite has no statement timeout."),
            "duckdb": Capability(False, "DuckDB has no statement timeout."),
            "mysql": Capability(
                True, "MariaDB `max_statement_time`; MySQL `max_execution_time` (SELECT only)."
            ),
        },
    ),
    "concurrent_writers": (
        "Several connections writing at once",
        {
            "sqlite": Capability(True, "Serialized by BEGIN IMMEDIATE and the busy timeout."),
            "duckdb": Capability(
                True, "Optimistic: a conflicting writer gets RetryableError (run_tx retries)."
            ),
        },
    ),
    "migrations": (
        "Alembic migrations (`migrate()`, `asyncdb migrate`)",
        {
            "sqlite": Capability(
                True, "One BEGIN IMMEDIATE transaction, a SAVEPOINT per revision."
            ),
            "mysql": Capability(
                True,
                "A transaction per revision under GET_LOCK; DDL commits implicitly, so a "
                "failed revision may leave part of its DDL behind.",
            ),
            "duckdb": Capability(
                True,
                "Upgrades: a transaction per revision (the file admits one process, so no "
                "lock). Downgrading asyncdb_0002 fails: DuckDB cannot drop the columns of a "
                "table that has an index.",
            ),
        },
    ),
    "deferred_constraints": (
        "constraints checked at COMMIT (`DEFERRABLE INITIALLY DEFERRED`)",
        {
            "sqlite": Capability(True, "`PRAGMA defer_foreign_keys` (foreign keys only)."),
            "mysql": Capability(
                False, "MariaDB/MySQL check every constraint at each statement (no DEFERRABLE)."
            ),
            "duckdb": Capability(
                False, "DuckDB checks every constraint at each statement (no DEFERRABLE)."
            ),
        },
    ),
    "foreign_key_actions": (
        "`ON DELETE` actions, and updates of rows that other rows' foreign keys reference",
        {
            "duckdb": Capability(
                False,
                "DuckDB refuses ON DELETE/ON UPDATE actions (asyncdb creates the keys "
                "without them) and refuses to update or delete a row other rows refer to.",
            ),
        },
    ),
    "cache_in_transactions": (
        "the row cache serves reads inside a unit of work (READ COMMITTED, or a writer that "
        "holds the write lock)",
        {
            "sqlite": Capability(True, "Write units: BEGIN IMMEDIATE holds the write lock."),
            "mysql": Capability(True, "asyncdb runs MariaDB/MySQL at READ COMMITTED by default."),
            "duckdb": Capability(
                False,
                "DuckDB transactions read a snapshot while others commit (optimistic "
                "writers): reads inside a unit bypass the cache; one-statement reads use it.",
            ),
        },
    ),
}


#: SQLAlchemy dialect names that differ from the backend names above.
_DIALECT_BACKENDS = {"mariadb": "mysql"}


def _cell(feature: str, backend: str) -> Capability:
    if feature not in FEATURES:
        msg = f"Unknown feature {feature!r}. Known: {', '.join(sorted(FEATURES))}."
        raise ValueError(msg)
    return FEATURES[feature][1].get(_DIALECT_BACKENDS.get(backend, backend), _YES)


def supports(backend: str, feature: str) -> bool:
    """True when ``backend`` supports ``feature``.

    ``backend`` is ``DatabaseSettings.backend`` or a SQLAlchemy dialect name.
    """
    return _cell(feature, backend).supported


def reason(backend: str, feature: str) -> str:
    """Why ``backend`` lacks ``feature`` (or how it provides it); empty when plain ✓."""
    return _cell(feature, backend).note


def require(backend: str, feature: str) -> None:
    """Raise :class:`UnsupportedFeatureError` naming the feature and backend if unsupported."""
    cell = _cell(feature, backend)
    if not cell.supported:
        name = BACKENDS.get(_DIALECT_BACKENDS.get(backend, backend), backend)
        msg = f"{name} does not support {feature}: {cell.note}"
        raise UnsupportedFeatureError(msg, feature=feature, backend=backend)


def render_markdown() -> str:
    """The table as Markdown: feature by backend, ✓ / ✗ with the reason."""
    header = "| Feature | " + " | ".join(BACKENDS.values()) + " |"
    rule = "|---" * (len(BACKENDS) + 1) + "|"
    lines = [header, rule]
    for feature, (description, _) in FEATURES.items():
        cells = []
        for backend in BACKENDS:
            cell = _cell(feature, backend)
            mark = "✓" if cell.supported else "✗"
            cells.append(f"{mark} {cell.note}".strip())
        lines.append(f"| `{feature}`: {description} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
