"""The wheel carries the migrations: build it, install it into a fresh virtual environment,
and migrate a new SQLite file from there, with no source checkout in sight."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.integration.test_migrations_app import tables_and_versions, write_app_project

REPO = Path(__file__).resolve().parents[2]
HEAD = "asyncdb_0002"


def run(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_installed_wheel_runs_migrate_and_demo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "build", "--wheel", "--outdir", dist]
    if importlib.util.find_spec("hatchling") is not None:
        build.append("--no-isolation")  # the backend is here already; skip a download
    run(*build, REPO, cwd=REPO)
    (wheel,) = dist.glob("asyncdb_toolkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {
        "asyncdb/_migrations/env.py",
        "asyncdb/_migrations/script.py.mako",
        "asyncdb/_migrations/versions/asyncdb_0001_audit_log.py",
        f"asyncdb/_migrations/versions/{HEAD}_audit_chain.py",
    } <= names
    assert not any("__pycache__" in name for name in names)

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    bin_dir = venv / "bin"
    # Dependencies come from the configured package index; the runtime ones only.
    run(bin_dir / "python", "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path)

    # Nothing may leak in from this checkout or this test run's environment.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"} and not key.startswith("ASYNCDB_")
    }
    work = tmp_path / "work"
    work.mkdir()
    where = run(
        bin_dir / "python",
        "-c",
        "import asyncdb; print(asyncdb.migrations_location())",
        cwd=work,
        env=env,
    ).stdout.strip()
    assert Path(where).is_relative_to(venv)
    assert Path(where).parts[-2:] == ("asyncdb", "_migrations")

    db_file = work / "x.db"
    url = f"sqlite+aiosqlite:///{db_file}"
    migrated = run(bin_dir / "asyncdb", "migrate", "--url", url, cwd=work, env=env)
    assert f"from base to {HEAD}" in migrated.stdout
    run(bin_dir / "asyncdb", "migrate", "--status", "--url", url, cwd=work, env=env)
    assert "CREATE TABLE asyncdb_audit_log" in (
        run(bin_dir / "asyncdb", "migrate", "--sql", "--url", url, cwd=work, env=env).stdout
    )
    run(bin_dir / "asyncdb", "demo", "--url", url, cwd=work, env=env)  # exit code 0: it passed

    with sqlite3.connect(db_file) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        versions = [
            row[0] for row in conn.execute("SELECT version_num FROM asyncdb_alembic_version")
        ]
    conn.close()
    assert "asyncdb_audit_log" in tables
    assert versions == [HEAD]

    # An application chaining the asyncdb branch exactly as docs/migrations.md shows it,
    # with the packaged location "asyncdb:_migrations/versions".
    app = write_app_project(tmp_path / "app", chained=True)
    app_env = {**env, "MYAPP_DATABASE_URL": f"sqlite+aiosqlite:///{app / 'app.db'}"}
    alembic = bin_dir / "alembic"
    run(alembic, "upgrade", "heads", cwd=app, env=app_env)
    run(
        alembic, "revision", "--autogenerate", "-m", "init", "--rev-id", "app_0001",
        "--head", "base", "--branch-label", "myapp", "--version-path", "alembic/versions",
        cwd=app, env=app_env,
    )  # fmt: skip
    run(alembic, "upgrade", "heads", cwd=app, env=app_env)
    run(alembic, "check", cwd=app, env=app_env)
    tables, versions = tables_and_versions(app / "app.db", "alembic_version")
    assert {"asyncdb_audit_log", "app_order"} <= tables
    assert versions == ["app_0001", HEAD]
