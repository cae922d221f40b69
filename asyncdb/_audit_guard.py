"""Append-only audit log on PostgreSQL: a trigger that rejects UPDATE, DELETE and TRUNCATE.

Turned on by ``migrate(db, audit_append_only=True)`` (``asyncdb migrate
--audit-append-only``) and off by ``audit_append_only=False``. The one way past it is
retention: :func:`cleanup_audit_logs` sets the transaction-local setting
``asyncdb.audit_retention`` before its DELETEs. The trigger stops accidents and code that
writes where it should not; it is not a privilege boundary against someone who can run SQL
as the table's owner (see docs/audit.md for the REVOKE that makes it one).
"""

from __future__ import annotations

from sqlalchemy import Connection

from ._audit_chain import RETENTION_SETTING
from ._audit_model import AUDIT_TABLE
from ._errors import MigrationError

__all__ = ["APPEND_ONLY_TRIGGER", "append_only_sql", "set_append_only"]

APPEND_ONLY_TRIGGER = "asyncdb_audit_append_only"
_TRUNCATE_TRIGGER = "asyncdb_audit_no_truncate"

_FUNCTION = f"""
CREATE OR REPLACE FUNCTION {APPEND_ONLY_TRIGGER}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('{RETENTION_SETTING}', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '{AUDIT_TABLE} is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Audit rows are evidence. Remove old rows with cleanup_audit_logs().';
END
$$
"""


def append_only_sql(enabled: bool) -> list[str]:
    """The PostgreSQL statements that turn the guard on (or off); each is idempotent."""
    drop = [
        f"DROP TRIGGER IF EXISTS {APPEND_ONLY_TRIGGER} ON {AUDIT_TABLE}",
        f"DROP TRIGGER IF EXISTS {_TRUNCATE_TRIGGER} ON {AUDIT_TABLE}",
    ]
    if not enabled:
        return [*drop, f"DROP FUNCTION IF EXISTS {APPEND_ONLY_TRIGGER}()"]
    return [
        _FUNCTION.strip(),
        *drop,
        f"CREATE TRIGGER {APPEND_ONLY_TRIGGER} BEFORE UPDATE OR DELETE ON {AUDIT_TABLE} "
        f"FOR EACH ROW EXECUTE FUNCTION {APPEND_ONLY_TRIGGER}()",
        f"CREATE TRIGGER {_TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {AUDIT_TABLE} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {APPEND_ONLY_TRIGGER}()",
    ]


def set_append_only(connection: Connection, enabled: bool) -> None:
    """Install or remove the guard on ``connection`` (inside the caller's transaction)."""
    if connection.dialect.name != "postgresql":
        if enabled:
            msg = (
                "audit_append_only needs PostgreSQL (it installs a trigger there); on "
                f"{connection.dialect.name}, restrict writes to the audit table by other means "
                "and rely on verify_audit_chain."
            )
            raise MigrationError(msg)
        return
    for statement in append_only_sql(enabled):
        connection.exec_driver_sql(statement)
