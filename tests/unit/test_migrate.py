"""The migration scripts, their location, --sql mode and the CLI's arguments: no database."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Integer
from sqlalchemy.dialects import postgresql

import asyncdb._migrate as migrate_module
from asyncdb import (
    MigrationError,
    UTCDateTime,
    alembic_render_item,
    migrate,
    migrations_location,
    toolkit_metadata,
)
from asyncdb._migrate import ADVISORY_LOCK_KEY, BRANCH_LABEL, VERSION_TABLE
from asyncdb.cli import main

REPO = Path(__file__).resolve().parents[2]


def script_directory() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(migrations_location()))
    return ScriptDirectory.from_config(config)


def test_location_is_the_checkouts_migrations_directory() -> None:
    # In an editable install; the wheel test covers asyncdb/_migrations.
    location = migrations_location()
    assert location == REPO / "migrations"
    assert (location / "env.py").is_file()
    assert (location / "script.py.mako").is_file()


def test_location_prefers_the_packaged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site-packages" / "asyncdb"
    (package / "_migrations" / "versions").mkdir(parents=True)
    (package / "_migrations" / "env.py").write_text("")
    monkeypatch.setattr(migrate_module, "__file__", str(package / "_migrate.py"))
    assert migrations_location() == package / "_migrations"


def test_missing_migrations_are_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate_module, "__file__", str(tmp_path / "asyncdb" / "_migrate.py"))
    with pytest.raises(MigrationError, match=r"missing from this installation.*Reinstall"):
        migrations_location()


def test_history_is_one_linear_branch_labelled_asyncdb() -> None:
    script = script_directory()
    revisions = list(script.walk_revisions())
    assert len(script.get_heads()) == 1
    assert len(script.get_bases()) == 1
    base = script.get_revision(script.get_bases()[0])
    assert base is not None
    assert BRANCH_LABEL in base.branch_labels
    for revision in revisions:
        # Readable ids that never collide with an application's own revisions.
        assert revision.revision.startswith("asyncdb_"), revision.revision
        assert Path(revision.path).name.startswith(revision.revision + "_")
        assert BRANCH_LABEL in revision.branch_labels or revision.down_revision is not None


def test_revisions_do_not_import_asyncdb() -> None:
    # A migration is frozen in time: it must not change when the models do.
    for path in (migrations_location() / "versions").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] == "asyncdb" for name in names), path.name


def test_toolkit_metadata_holds_the_audit_log() -> None:
    assert "asyncdb_audit_log" in toolkit_metadata.tables
    assert VERSION_TABLE not in toolkit_metadata.tables


def test_advisory_lock_key_is_a_signed_64_bit_integer() -> None:
    assert -(2**63) <= ADVISORY_LOCK_KEY < 2**63
    assert ADVISORY_LOCK_KEY.to_bytes(8, "big") == b"asyncdb\x00"


def test_render_item_writes_asyncdb_types_as_importable_code() -> None:
    class Context:
        opts = {"sqlalchemy_module_prefix": "sa."}
        imports: set[str] = set()

    context: Any = Context()
    assert alembic_render_item("type", UTCDateTime(), context) == "sa.DateTime(timezone=True)"
    jsonb = alembic_render_item("type", postgresql.JSONB(), context)
    assert jsonb == "postgresql.JSONB(astext_type=sa.Text())"
    assert context.imports == {"from sqlalchemy.dialects import postgresql"}
    assert alembic_render_item("type", Integer(), context) is False
    assert alembic_render_item("column", UTCDateTime(), context) is False


# -- --sql: no connection ----------------------------------------------------------------


async def test_sql_mode_renders_postgres_sql_without_connecting() -> None:
    # Nothing listens on this host; --sql must not try.
    url = "postgresql+asyncpg://app:s3cret-pw@db.invalid:5432/app"
    result = await migrate(url, sql=True)
    assert result.sql is not None
    assert "CREATE TABLE asyncdb_audit_log" in result.sql
    assert "JSONB" in result.sql
    assert "BIGSERIAL" in result.sql
    assert f"CREATE TABLE {VERSION_TABLE}" in result.sql
    assert "CREATE INDEX ix_asyncdb_audit_log_entity" in result.sql
    assert result.sql.count("BEGIN;") == result.sql.count("COMMIT;") >= 1
    assert "s3cret-pw" not in result.sql
    assert "s3cret-pw" not in result.url
    assert result.applied == ("asyncdb_0001", "asyncdb_0002")
    assert not result.changed


async def test_sql_mode_renders_sqlite_sql_and_creates_no_file(tmp_path: Path) -> None:
    db_file = tmp_path / "never.db"
    result = await migrate(f"sqlite+aiosqlite:///{db_file}", sql=True)
    assert result.sql is not None
    assert "CREATE TABLE asyncdb_audit_log" in result.sql
    assert "JSONB" not in result.sql
    assert not db_file.exists()


async def test_sql_mode_rejects_an_unknown_revision() -> None:
    with pytest.raises(MigrationError, match="nope"):
        await migrate("sqlite+aiosqlite:///:memory:", revision="nope", sql=True)


# -- CLI arguments -------------------------------------------------------------------------


def test_cli_modes_are_mutually_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["migrate", "--status", "--sql"])
    assert caught.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_cli_revision_goes_with_upgrades_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--downgrade", "base", "--revision", "head"]) == 2
    assert "--revision goes with an upgrade" in capsys.readouterr().err


def test_cli_sql_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--sql", "--url", "postgresql+asyncpg://app@db.invalid/app"]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE asyncdb_audit_log" in out
    assert "JSONB" in out
