"""asyncdb: an async database toolkit on SQLAlchemy 2.x asyncio.

A pooled :class:`AsyncDatabaseManager`, a typed :class:`Repository`, an
:class:`AsyncUnitOfWork` with savepoints and retries, an audit trail, metrics and
Alembic migrations, for asyncio and FastAPI applications.
"""

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
    ValidationError,
)
from ._health import HealthReport
from ._manager import AsyncDatabaseManager, ManagerState, StateError
from ._metrics import Metrics
from ._models import Audited, Base, SoftDeleteMixin, TimestampMixin, UTCDateTime, utcnow
from ._settings import DatabaseSettings, mask_url

__version__ = "0.1.0"

__all__ = [
    "AsyncDBError",
    "AsyncDatabaseManager",
    "AuditContext",
    "Audited",
    "Base",
    "ConfigurationError",
    "ConflictError",
    "DatabaseSettings",
    "DatabaseUnavailableError",
    "HealthReport",
    "ManagerState",
    "Metrics",
    "MigrationError",
    "NotFoundError",
    "PoolTimeoutError",
    "QueryError",
    "RetryableError",
    "SoftDeleteMixin",
    "StateError",
    "TimestampMixin",
    "TransactionError",
    "UTCDateTime",
    "ValidationError",
    "__version__",
    "audit_context",
    "get_audit_context",
    "mask_url",
    "utcnow",
]
