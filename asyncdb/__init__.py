"""asyncdb: an async database toolkit on SQLAlchemy 2.x asyncio.

A pooled :class:`AsyncDatabaseManager`, a typed :class:`Repository`, an
:class:`AsyncUnitOfWork` with savepoints and retries, an audit trail, metrics and
Alembic migrations, for asyncio and FastAPI applications.
"""

from ._aggregates import Aggregate, Count, Exists
from ._audit import cleanup_audit_logs, get_audit_logs
from ._audit_export import export_audit_logs, iter_audit_logs
from ._audit_history import AuditVersion, as_of, history, revert
from ._audit_model import AuditAction, AuditLog
from ._audit_verify import AuditChainBreak, AuditChainReport, verify_audit_chain
from ._cache import RepositoryCache
from ._cache_backend import CacheBackend, MemoryCacheBackend
from ._context import AuditContext, audit_context, get_audit_context
from ._errors import (
    AsyncDBError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    ConflictError,
    ConnectionLostError,
    DatabaseUnavailableError,
    DataError,
    MigrationError,
    NotFoundError,
    PoolTimeoutError,
    QueryError,
    RetryableError,
    StateError,
    TransactionError,
    ValidationError,
)
from ._health import HealthReport
from ._helpers import get_conn, get_db_manager, get_session, init_database, run_tx, set_db_manager
from ._manager import AsyncDatabaseManager, ManagerState
from ._metrics import Metrics
from ._migrate import (
    MigrationResult,
    MigrationStatus,
    alembic_render_item,
    downgrade,
    migrate,
    migration_status,
    migrations_location,
)
from ._models import Audited, Base, SoftDeleteMixin, TimestampMixin, UTCDateTime, utcnow
from ._offset_page import OffsetPage
from ._pagination import KeysetPage, Page
from ._repository import Repository
from ._routing import route_reads
from ._schema import toolkit_metadata
from ._settings import DatabaseSettings, mask_url
from ._uow import AsyncUnitOfWork

__version__ = "0.1.0"

__all__ = [
    "Aggregate",
    "AsyncDBError",
    "AsyncDatabaseManager",
    "AsyncUnitOfWork",
    "AuditAction",
    "AuditChainBreak",
    "AuditChainReport",
    "AuditContext",
    "AuditLog",
    "AuditVersion",
    "Audited",
    "Base",
    "CacheBackend",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConflictError",
    "ConnectionLostError",
    "Count",
    "DataError",
    "DatabaseSettings",
    "DatabaseUnavailableError",
    "Exists",
    "HealthReport",
    "KeysetPage",
    "ManagerState",
    "MemoryCacheBackend",
    "Metrics",
    "MigrationError",
    "MigrationResult",
    "MigrationStatus",
    "NotFoundError",
    "OffsetPage",
    "Page",
    "PoolTimeoutError",
    "QueryError",
    "Repository",
    "RepositoryCache",
    "RetryableError",
    "SoftDeleteMixin",
    "StateError",
    "TimestampMixin",
    "TransactionError",
    "UTCDateTime",
    "ValidationError",
    "__version__",
    "alembic_render_item",
    "as_of",
    "audit_context",
    "cleanup_audit_logs",
    "downgrade",
    "export_audit_logs",
    "get_audit_context",
    "get_audit_logs",
    "get_conn",
    "get_db_manager",
    "get_session",
    "history",
    "init_database",
    "iter_audit_logs",
    "mask_url",
    "migrate",
    "migration_status",
    "migrations_location",
    "revert",
    "route_reads",
    "run_tx",
    "set_db_manager",
    "toolkit_metadata",
    "utcnow",
    "verify_audit_chain",
]


def _report_public_module() -> None:
    """Exported classes and functions say ``asyncdb``, where users import them from
    (reprs, tracebacks, pickles and docs show ``asyncdb.ConflictError``).

    Not a class with annotations of its own: SQLAlchemy's declarative scan and
    ``typing.get_type_hints`` resolve those in the class's home module.
    """
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and "__annotations__" in vars(obj):
            continue
        if callable(obj) and getattr(obj, "__module__", "").startswith("asyncdb._"):
            obj.__module__ = "asyncdb"


_report_public_module()
