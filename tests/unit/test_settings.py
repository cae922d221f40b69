from __future__ import annotations

import pytest
import sqlalchemy

from asyncdb import AsyncDatabaseManager, ConfigurationError, DatabaseSettings, mask_url


def test_defaults_point_at_embedded_sqlite_file() -> None:
    settings = DatabaseSettings()
    assert settings.url == "sqlite+aiosqlite:///./asyncdb.sqlite3"
    assert settings.backend == "sqlite"
    assert not settings.is_sqlite_memory
    assert settings.connect_timeout == 10.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pool_size", -1),
        ("pool_size", 0),
        ("max_overflow", -5),
        ("pool_timeout", -1.0),
        ("connect_timeout", 0),
        ("connect_retries", 0),
        ("statement_timeout", -2.0),
        ("slow_query_threshold", float("nan")),
        ("max_page_size", 0),
        ("pool_size", True),
        ("echo", "yes"),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=field):
        DatabaseSettings(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://root@localhost/test",
        "mysql+asyncmy://root@localhost",
        "mariadb+asyncmy://localhost",
        "duckdb+duckdb_engine:///x.duckdb",
        "oracle+cx_oracle://u:p@h/x",
        "not a url",
        "://nothing",
        "",
        "postgresql+psycopg2://u@h/db",
        "postgresql+asyncpg:///nodb_host",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings(url=url)
    assert "secret" not in str(info.value)


def test_bad_url_message_never_echoes_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings(url="mysql+pymysql://root:s3cr3t@localhost/test")
    assert "s3cr3t" not in str(info.value)


def test_bare_schemes_get_their_async_driver() -> None:
    assert DatabaseSettings(url="postgresql://u@h/db").url.startswith("postgresql+asyncpg://")
    assert DatabaseSettings(url="postgres://u@h/db").url.startswith("postgresql+asyncpg://")
    assert DatabaseSettings(url="sqlite:///x.db").url.startswith("sqlite+aiosqlite://")
    assert DatabaseSettings(url="mysql://u@h/db").url.startswith("mysql+asyncmy://")
    assert DatabaseSettings(url="mariadb://u@h/db").url.startswith("mysql+asyncmy://")
    if sqlalchemy.__version__.startswith("2.0."):
        with pytest.raises(ConfigurationError, match=r"DuckDB.*SQLAlchemy 2\.1"):
            DatabaseSettings(url="duckdb:///x.duckdb")
    else:
        assert DatabaseSettings(url="duckdb:///x.duckdb").url.startswith("duckdb+aioduckdb://")
        assert DatabaseSettings(url="duckdb:///:memory:").is_memory
        assert not DatabaseSettings(url="duckdb:///x.duckdb").is_memory
    assert (
        DatabaseSettings(url="mysql+asyncmy://u:pw@h/db").masked_url == "mysql+asyncmy://u:***@h/db"
    )
    assert DatabaseSettings(url="sqlite+aiosqlite:///:memory:").is_sqlite_memory


def test_repr_and_masked_url_hide_the_password() -> None:
    settings = DatabaseSettings(url="postgresql+asyncpg://app:hunter2@db:5432/app")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.masked_url
    assert "***" in settings.masked_url
    assert "hunter2" not in mask_url("postgresql+asyncpg://app:hunter2@db/app")
    assert mask_url("::garbage::") == "<unparseable URL>"


def test_from_env_reads_prefixed_variables() -> None:
    env = {
        "ASYNCDB_URL": "postgresql+asyncpg://u@h/db",
        "ASYNCDB_POOL_SIZE": "7",
        "ASYNCDB_STATEMENT_TIMEOUT": "none",
        "ASYNCDB_ECHO": "false",
        "ASYNCDB_POOL_TIMEOUT": "2.5",
        "UNRELATED": "x",
    }
    settings = DatabaseSettings.from_env(env, max_overflow=3)
    assert settings.pool_size == 7
    assert settings.statement_timeout is None
    assert settings.echo is False
    assert settings.pool_timeout == 2.5
    assert settings.max_overflow == 3


def test_from_env_rejects_garbage_with_the_variable_name() -> None:
    with pytest.raises(ConfigurationError, match="ASYNCDB_POOL_SIZE"):
        DatabaseSettings.from_env({"ASYNCDB_POOL_SIZE": "lots"})


def test_settings_are_frozen_and_replace_validates() -> None:
    settings = DatabaseSettings()
    with pytest.raises(AttributeError):
        settings.pool_size = 3  # type: ignore[misc]
    assert settings.replace(pool_size=3).pool_size == 3
    with pytest.raises(ConfigurationError, match="pool_size"):
        settings.replace(pool_size=-3)
    with pytest.raises(ConfigurationError, match="Unknown setting"):
        settings.replace(pool_sise=3)


def test_manager_rejects_bad_settings_before_any_connection() -> None:
    with pytest.raises(ConfigurationError, match="pool_size"):
        AsyncDatabaseManager("postgresql+asyncpg://u:p@127.0.0.1:1/db", pool_size=-1)
    with pytest.raises(ConfigurationError, match="Unknown setting"):
        AsyncDatabaseManager("sqlite+aiosqlite:///:memory:", poolsize=1)
    with pytest.raises(ConfigurationError):
        AsyncDatabaseManager("nonsense://")


def test_manager_repr_masks_password() -> None:
    db = AsyncDatabaseManager("postgresql+asyncpg://app:hunter2@db:5432/app")
    assert "hunter2" not in repr(db)
    assert "state=new" in repr(db)


def test_from_env_names_the_variable_when_a_value_is_out_of_range() -> None:
    with pytest.raises(ConfigurationError) as info:
        DatabaseSettings.from_env({"ASYNCDB_POOL_SIZE": "-1"})
    message = str(info.value)
    assert message.startswith("ASYNCDB_POOL_SIZE must be an integer between 1 and")
    assert message.endswith("(got -1).")


def test_from_env_says_an_integer_not_a_int() -> None:
    with pytest.raises(ConfigurationError, match=r"ASYNCDB_POOL_SIZE must be an integer \(got"):
        DatabaseSettings.from_env({"ASYNCDB_POOL_SIZE": "many"})
    with pytest.raises(ConfigurationError, match=r"ASYNCDB_POOL_TIMEOUT must be a number \(got"):
        DatabaseSettings.from_env({"ASYNCDB_POOL_TIMEOUT": "soon"})


def test_from_env_treats_an_empty_variable_as_unset() -> None:
    default = DatabaseSettings()
    settings = DatabaseSettings.from_env({"ASYNCDB_POOL_SIZE": "", "ASYNCDB_ECHO": "  "})
    assert settings.pool_size == default.pool_size


def test_an_override_keeps_its_field_name() -> None:
    with pytest.raises(ConfigurationError, match=r"^pool_size must be"):
        DatabaseSettings.from_env({"ASYNCDB_POOL_SIZE": "5"}, pool_size=-1)
