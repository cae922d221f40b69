"""asyncdb: an async database toolkit on SQLAlchemy 2.x asyncio.

A pooled :class:`AsyncDatabaseManager`, a typed :class:`Repository`, an
:class:`AsyncUnitOfWork` with savepoints and retries, an audit trail, metrics and
Alembic migrations, for asyncio and FastAPI applications.
"""

from ._audit import cleanup_audit_logs, get_audit_logs
from ._audit_model import AuditAction, AuditLog
from ._cache import CacheBackend, MemoryCacheBackend, RepositoryCache
from ._context import AuditContext, audit_context, get_audit_context
from ._errors import (
    AsyncDBError,
    ConfigurationError,
    ConflictError,
    DatabaseUnavailableError,
    MigrationError,
    NotFoundError,
    PoolTimeoutError,
    QueryError,
    RetryableError,
    TransactionError,
    UnsupportedFeatureError,
    ValidationError,
)
from ._health import HealthReport
from ._helpers import get_conn, get_db_manager, get_session, init_database, run_tx, set_db_manager
from ._manager import AsyncDatabaseManager, ManagerState, StateError
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
from ._pagination import KeysetPage, Page
from ._repository import Repository
from ._schema import toolkit_metadata
from ._settings import DatabaseSettings, mask_url
from ._uow import AsyncUnitOfWork

__version__ = "0.1.0"

__all__ = [
    "AsyncDBError",
    "AsyncDatabaseManager",
    "AsyncUnitOfWork",
    "AuditAction",
    "AuditContext",
    "AuditLog",
    "Audited",
    "Base",
    "CacheBackend",
    "ConfigurationError",
    "ConflictError",
    "DatabaseSettings",
    "DatabaseUnavailableError",
    "HealthReport",
    "KeysetPage",
    "ManagerState",
    "MemoryCacheBackend",
    "Metrics",
    "MigrationError",
    "MigrationResult",
    "MigrationStatus",
    "NotFoundError",
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
    "UnsupportedFeatureError",
    "ValidationError",
    "__version__",
    "alembic_render_item",
    "audit_context",
    "cleanup_audit_logs",
    "downgrade",
    "get_audit_context",
    "get_audit_logs",
    "get_conn",
    "get_db_manager",
    "get_session",
    "init_database",
    "mask_url",
    "migrate",
    "migration_status",
    "migrations_location",
    "run_tx",
    "set_db_manager",
    "toolkit_metadata",
    "utcnow",
]
