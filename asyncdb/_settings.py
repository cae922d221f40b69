"""DatabaseSettings: one frozen, validated object holding every knob of the manager.

Every duration is in seconds, as a float. Every wait is bounded by default, so a dead
or black-holed server never hangs a caller: ``connect_timeout`` bounds opening a
connection, ``pool_timeout`` bounds waiting for a pooled one, ``statement_timeout``
bounds a statement on the server.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Mapping
from typing import Any

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from ._errors import ConfigurationError

__all__ = ["DEFAULT_URL", "DatabaseSettings", "cursor_secret_from_env", "mask_url"]

DEFAULT_URL = "sqlite+aiosqlite:///./asyncdb.sqlite3"
DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10
DEFAULT_POOL_TIMEOUT = 30.0
DEFAULT_POOL_RECYCLE = 1800.0
DEFAULT_PING_IDLE_AFTER = 1.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_CONNECT_RETRIES = 3
DEFAULT_RETRY_BACKOFF = 0.25
DEFAULT_SLOW_QUERY_THRESHOLD = 1.0
DEFAULT_STATEMENT_TIMEOUT = 60.0
DEFAULT_BUSY_TIMEOUT = 5.0
DEFAULT_LEAK_THRESHOLD = 60.0
DEFAULT_MAX_PAGE_SIZE = 1000
DEFAULT_APPLICATION_NAME = "asyncdb"
DEFAULT_STICKY_AFTER_WRITE = 5.0
DEFAULT_MAX_REPLICA_LAG = 5.0
DEFAULT_REPLICA_CHECK_INTERVAL = 1.0
#: ``ASYNCDB_REPLICA_URLS`` (comma-separated) is the documented name of ``replicas``.
REPLICA_URLS_ENV = "ASYNCDB_REPLICA_URLS"
ENV_PREFIX = "ASYNCDB_"
#: Shortest cursor secret accepted: a guessable secret lets anyone forge cursors.
MIN_CURSOR_SECRET_LENGTH = 16
#: URL query parameters whose values are secrets (asyncpg accepts ``?password=``).
_SECRET_QUERY_WORDS = ("password", "passwd", "pwd", "secret", "token", "sslkey")
_MASK = "***"

# Drivers asyncdb knows how to configure; a bare scheme is completed with its async driver.
_DRIVERS = {
    "sqlite": "aiosqlite",
    "postgresql": "asyncpg",
    "mysql": "asyncmy",  # MariaDB and MySQL
    "duckdb": "aioduckdb",  # asyncdb's own adapter (asyncdb/_aioduckdb.py)
}
#: DuckDB's dialect builds on the asyncio adapters of SQLAlchemy 2.1.
_SQLALCHEMY_2_1 = tuple(int(part) for part in sqlalchemy.__version__.split(".")[:2]) >= (2, 1)
_SCHEME_ALIASES = {"postgres": "postgresql", "mariadb": "mysql"}
#: Backends that run in-process on a file (or in memory): no host, no password.
_EMBEDDED = frozenset({"sqlite", "duckdb"})
#: Backends whose URL must name a host and a database.
_SERVERS = frozenset({"postgresql", "mysql"})


def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_QUERY_WORDS)


def mask_url(url: str | URL) -> str:
    """Render ``url`` with every secret replaced by ``***``; never raises.

    The password of the userinfo part and every query parameter that carries a secret
    (``?password=``, ``?sslpassword=``, ``?secret=``, ...) are masked alike.
    """
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError):
        return "<unparseable URL>"
    if parsed.get_backend_name() in _EMBEDDED:
        return f"{parsed.drivername}:///{parsed.database or ''}"  # no password to hide
    query = {
        key: ((_MASK,) * len(value) if isinstance(value, tuple) else _MASK)
        if _is_secret_key(key)
        else value
        for key, value in parsed.query.items()
    }
    rendered = parsed.set(query=query).render_as_string(hide_password=True)
    return rendered.replace("%2A%2A%2A", _MASK)  # the query part is percent-encoded


def cursor_secret_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The cursor secrets in ``ASYNCDB_CURSOR_SECRET`` (comma-separated), or None."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_PREFIX + "CURSOR_SECRET", "")
    return _check_cursor_secret(raw) if raw.strip() else None


def _check_cursor_secret(value: object) -> tuple[str, ...] | None:
    """``value`` as a tuple of secrets, the signing one first; ConfigurationError if weak."""
    if value is None:
        return None
    items = [s.strip() for s in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        msg = "cursor_secret must be a string or a list of strings (the first one signs)."
        raise ConfigurationError(msg)
    for item in items:
        if not isinstance(item, str) or len(item) < MIN_CURSOR_SECRET_LENGTH:
            msg = (
                f"cursor_secret: every secret must be a string of at least "
                f"{MIN_CURSOR_SECRET_LENGTH} characters; generate one with "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
            )
            raise ConfigurationError(msg)
    return tuple(items)


def _normalize_url(raw: str) -> URL:
    if not isinstance(raw, str) or not raw.strip():
        msg = "url must be a non-empty database URL such as 'sqlite+aiosqlite:///./app.db'."
        raise ConfigurationError(msg)
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError) as exc:
        msg = (
            "url is not a valid database URL. Use the form "
            "'postgresql+asyncpg://user:password@host:5432/dbname' or "
            "'sqlite+aiosqlite:///path/to/file.db'."
        )
        raise ConfigurationError(msg) from exc
    backend = _SCHEME_ALIASES.get(url.get_backend_name(), url.get_backend_name())
    driver = url.get_driver_name() if "+" in url.drivername else None
    if backend not in _DRIVERS:
        msg = (
            f"url uses the unsupported backend {backend!r}. Supported: "
            "'sqlite+aiosqlite' and 'duckdb+aioduckdb' (embedded), 'postgresql+asyncpg' "
            "and 'mysql+asyncmy' (MariaDB/MySQL)."
        )
        raise ConfigurationError(msg)
    expected = _DRIVERS[backend]
    if driver is not None and driver != expected:
        msg = f"url uses the driver {driver!r}, which is not async. Use '{backend}+{expected}'."
        raise ConfigurationError(msg)
    if backend == "duckdb" and not _SQLALCHEMY_2_1:
        msg = (
            f"url uses DuckDB, whose async adapter needs SQLAlchemy 2.1 or newer (installed: "
            f"{sqlalchemy.__version__}). Upgrade it: pip install 'sqlalchemy>=2.1'."
        )
        raise ConfigurationError(msg)
    url = url.set(drivername=f"{backend}+{expected}")
    if backend in _SERVERS and not url.host and not url.query.get("host"):
        msg = f"url has no host. Use '{backend}+{expected}://user@host/dbname'."
        raise ConfigurationError(msg)
    if backend in _SERVERS and not url.database:
        msg = "url names no database. Add it after the host: '...@host:5432/dbname'."
        raise ConfigurationError(msg)
    return url


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """Validated configuration of an :class:`AsyncDatabaseManager`.

    >>> DatabaseSettings(url="sqlite+aiosqlite:///:memory:", pool_size=2).backend
    'sqlite'

    Every field can come from an ``ASYNCDB_<FIELD>`` environment variable through
    :meth:`from_env`.
    """

    url: str = DEFAULT_URL
    #: Connections kept open in the pool (PostgreSQL and SQLite files).
    pool_size: int = DEFAULT_POOL_SIZE
    #: Extra connections opened under load beyond ``pool_size``.
    max_overflow: int = DEFAULT_MAX_OVERFLOW
    #: Seconds to wait for a free pooled connection before ``PoolTimeoutError``.
    pool_timeout: float = DEFAULT_POOL_TIMEOUT
    #: Seconds after which a connection is replaced at checkout; ``None`` keeps it forever.
    pool_recycle: float | None = DEFAULT_POOL_RECYCLE
    #: Check a connection's liveness at checkout (locally, plus a ping when it idled).
    pre_ping: bool = True
    #: A connection idle longer than this many seconds gets a real ping at checkout.
    ping_idle_after: float = DEFAULT_PING_IDLE_AFTER
    #: Seconds to wait for a new connection (TCP + authentication).
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    #: Attempts made by ``connect()`` on connection-level failures (at least 1).
    connect_retries: int = DEFAULT_CONNECT_RETRIES
    #: Base delay, in seconds, of the exponential backoff between connect attempts.
    retry_backoff: float = DEFAULT_RETRY_BACKOFF
    #: A statement slower than this many seconds is recorded in the slow-query log.
    slow_query_threshold: float = DEFAULT_SLOW_QUERY_THRESHOLD
    #: Server-side statement timeout in seconds (PostgreSQL); ``None`` disables it.
    statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT
    #: SQLite busy timeout: seconds a writer waits for the database lock.
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    #: A connection checked out longer than this many seconds is reported as a leak.
    leak_threshold: float | None = DEFAULT_LEAK_THRESHOLD
    #: Largest ``page_size`` that ``Repository.paginate`` accepts.
    max_page_size: int = DEFAULT_MAX_PAGE_SIZE
    #: Record query, pool and transaction metrics.
    metrics: bool = True
    #: asyncpg prepared-statement cache size; set 0 behind pgbouncer in transaction mode.
    statement_cache_size: int | None = None
    #: Log every statement (never its parameter values) on the ``sqlalchemy.engine`` logger.
    echo: bool = False
    #: Name shown in ``pg_stat_activity.application_name``.
    application_name: str = DEFAULT_APPLICATION_NAME
    #: Secret(s) signing keyset cursors: one string, or several for rotation (the first
    #: signs, all verify; comma-separated in ``ASYNCDB_CURSOR_SECRET``). Never derived from
    #: the URL. ``None``: a random per-process secret (cursors die with the process).
    cursor_secret: str | tuple[str, ...] | None = None
    # -- scale-out (docs/scaling.md) ---------------------------------------------------
    #: URLs of streaming read replicas; read-only units and standalone reads use them.
    replicas: tuple[str, ...] = ()
    #: After a task commits a write, its reads stay on the primary this many seconds.
    sticky_after_write: float = DEFAULT_STICKY_AFTER_WRITE
    #: A replica whose replay lag exceeds this many seconds is skipped; None: no bound.
    max_replica_lag: float | None = DEFAULT_MAX_REPLICA_LAG
    #: Seconds between background probes of each replica (health and replay lag).
    replica_check_interval: float = DEFAULT_REPLICA_CHECK_INTERVAL
    #: Behind pgbouncer in transaction mode: no prepared-statement caches, unique names.
    pgbouncer: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", _normalize_url(self.url).render_as_string(False))
        object.__setattr__(self, "cursor_secret", _check_cursor_secret(self.cursor_secret))
        self._check_replicas()
        self._check_int("pool_size", self.pool_size, 1, 10_000)
        self._check_int("max_overflow", self.max_overflow, 0, 10_000)
        self._check_int("connect_retries", self.connect_retries, 1, 100)
        self._check_int("max_page_size", self.max_page_size, 1, 1_000_000)
        if self.statement_cache_size is not None:
            self._check_int("statement_cache_size", self.statement_cache_size, 0, 1_000_000)
        for name in ("pool_timeout", "ping_idle_after", "connect_timeout", "busy_timeout"):
            self._check_float(name, getattr(self, name), 0.0, 86_400.0, allow_zero=True)
        self._check_float("retry_backoff", self.retry_backoff, 0.0, 60.0, allow_zero=True)
        self._check_float("slow_query_threshold", self.slow_query_threshold, 0.0, 86_400.0)
        for name in ("pool_recycle", "statement_timeout", "leak_threshold"):
            value = getattr(self, name)
            if value is not None:
                self._check_float(name, value, 0.0, 10_000_000.0)
        if self.connect_timeout == 0:
            msg = "connect_timeout must be greater than 0 seconds (got 0)."
            raise ConfigurationError(msg)
        self._check_float(
            "sticky_after_write", self.sticky_after_write, 0.0, 86_400.0, allow_zero=True
        )
        self._check_float("replica_check_interval", self.replica_check_interval, 0.0, 3_600.0)
        if self.max_replica_lag is not None:
            self._check_float("max_replica_lag", self.max_replica_lag, 0.0, 86_400.0)
        for name in ("pre_ping", "metrics", "echo", "pgbouncer"):
            if not isinstance(getattr(self, name), bool):
                msg = f"{name} must be True or False (got {getattr(self, name)!r})."
                raise ConfigurationError(msg)
        if not isinstance(self.application_name, str) or len(self.application_name) > 63:
            msg = "application_name must be a string of at most 63 characters."
            raise ConfigurationError(msg)

    def _check_replicas(self) -> None:
        replicas = self.replicas
        if isinstance(replicas, str):
            replicas = tuple(part for part in replicas.split(",") if part.strip())
        if not isinstance(replicas, (list, tuple)):
            msg = "replicas must be a list of database URLs (got a value of another type)."
            raise ConfigurationError(msg)
        normalized = tuple(_normalize_url(url).render_as_string(False) for url in replicas)
        if normalized and self.backend != "postgresql":
            msg = (
                "replicas need a PostgreSQL primary: streaming read replicas are a PostgreSQL "
                "feature. Remove replicas or use a 'postgresql+asyncpg://' url."
            )
            raise ConfigurationError(msg)
        for url in normalized:
            if make_url(url).get_backend_name() != "postgresql":
                msg = "every replica must be a 'postgresql+asyncpg://' URL, like the primary."
                raise ConfigurationError(msg)
        object.__setattr__(self, "replicas", normalized)

    @staticmethod
    def _check_int(name: str, value: object, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            msg = f"{name} must be an integer between {low} and {high} (got {value!r})."
            raise ConfigurationError(msg)

    @staticmethod
    def _check_float(
        name: str, value: object, low: float, high: float, *, allow_zero: bool = False
    ) -> None:
        ok = (
            not isinstance(value, bool)
            and isinstance(value, (int, float))
            and math.isfinite(value)
            and (low < value or (allow_zero and value == low))
            and value <= high
        )
        if not ok:
            bound = f"at least {low:g}" if allow_zero else f"greater than {low:g}"
            msg = (
                f"{name} must be a number of seconds {bound} and at most {high:g} (got {value!r})."
            )
            raise ConfigurationError(msg)

    # -- derived views -------------------------------------------------------------

    # Computed once per settings object (frozen: the URL never changes after
    # __post_init__): every repository call reads the backend, and parsing cost 5 us.
    @functools.cached_property
    def parsed_url(self) -> URL:
        """The URL as a SQLAlchemy :class:`~sqlalchemy.engine.URL`."""
        return make_url(self.url)

    @functools.cached_property
    def backend(self) -> str:
        """``"sqlite"``, ``"postgresql"``, ``"mysql"`` (MariaDB too) or ``"duckdb"``."""
        return self.parsed_url.get_backend_name()

    @property
    def is_sqlite_memory(self) -> bool:
        """True for an in-memory SQLite database (one shared connection)."""
        url = self.parsed_url
        return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")

    @property
    def is_memory(self) -> bool:
        """True for an in-memory database (SQLite or DuckDB): one connection is all of it."""
        url = self.parsed_url
        embedded = url.get_backend_name() in _EMBEDDED
        return embedded and url.database in (None, "", ":memory:")

    @functools.cached_property
    def masked_url(self) -> str:
        """The URL with its password replaced by ``***``, safe for logs."""
        return mask_url(self.parsed_url)

    def replace(self, **changes: Any) -> DatabaseSettings:
        """A copy with ``changes`` applied and validated."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            msg = f"Unknown setting(s): {', '.join(sorted(unknown))}. See DatabaseSettings fields."
            raise ConfigurationError(msg)
        return dataclasses.replace(self, **changes)

    @property
    def masked_replicas(self) -> tuple[str, ...]:
        """The replica URLs with their passwords replaced by ``***``."""
        return tuple(mask_url(url) for url in self.replicas)

    def __repr__(self) -> str:
        def shown(name: str) -> str:
            if name == "url":
                return self.masked_url
            if name == "replicas":
                return repr(self.masked_replicas)
            if name == "cursor_secret" and self.cursor_secret is not None:
                return repr(_MASK)
            return repr(getattr(self, name))

        fields = ", ".join(f"{f.name}={shown(f.name)}" for f in dataclasses.fields(self))
        return f"DatabaseSettings({fields})"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> DatabaseSettings:
        """Build settings from ``ASYNCDB_*`` variables, then apply ``overrides``.

        ``ASYNCDB_URL``, ``ASYNCDB_POOL_SIZE``, ``ASYNCDB_STATEMENT_TIMEOUT`` and so on:
        one variable per field. ``none`` sets an optional field to None; an empty variable
        counts as unset. An invalid value is a ``ConfigurationError`` naming the variable.
        Replicas come from ``ASYNCDB_REPLICA_URLS``, comma-separated.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if field.name == "replicas":
                raw = env.get(REPLICA_URLS_ENV, raw)
            if raw is not None and raw.strip():
                values[field.name] = _parse_env(field.name, str(field.type), raw)
        from_env = set(values) - set(overrides)
        values.update(overrides)
        try:
            return cls(**values)
        except ConfigurationError as exc:
            # Name the variable the user set, not the field it feeds.
            message = str(exc)
            for name in from_env:
                if message.startswith(f"{name} "):
                    renamed = ENV_PREFIX + name.upper() + message[len(name) :]
                    raise ConfigurationError(renamed) from exc
            raise


_ENV_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _parse_env(name: str, type_name: str, raw: str) -> Any:
    text = raw.strip()
    var = ENV_PREFIX + name.upper()
    if type_name.startswith("tuple"):
        return tuple(part.strip() for part in text.split(",") if part.strip())
    if "None" in type_name and text.lower() in {"", "none", "null"}:
        return None
    try:
        if type_name.startswith("bool"):
            lowered = text.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(text)
        if type_name.startswith("int"):
            return int(text)
        if type_name.startswith("float"):
            return float(text)
    except ValueError as exc:
        kind = _ENV_KINDS.get(type_name.split(" ")[0], type_name)
        msg = f"{var} must be {kind} (got {text!r})."
        raise ConfigurationError(msg) from exc
    return text
