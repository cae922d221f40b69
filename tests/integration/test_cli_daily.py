"""The command line as a user meets it, run in a subprocess: help, version, exit codes,
honest health, one-line failures, confirmation before a destructive downgrade."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asyncdb import __version__, migrate
from tests.conftest import POSTGRES_URL

# Each test starts the command line in a new interpreter.
pytestmark = pytest.mark.slow

UNREACHABLE = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCDB_")}
    return subprocess.run(
        [sys.executable, "-m", "asyncdb", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_version_and_bare_help() -> None:
    version = cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"asyncdb {__version__}"
    bare = cli()
    assert bare.returncode == 0
    assert "usage: asyncdb" in bare.stdout
    assert "exit codes:" in bare.stdout


def test_help_documents_exit_codes_and_defaults() -> None:
    out = cli("health", "--help").stdout
    assert "0  done" in out
    assert "2  could not run" in out
    assert "(default: 5.0)" in out  # --timeout


def test_environment_errors_name_the_variable(tmp_path: Path) -> None:
    bad = cli("health", env={"ASYNCDB_POOL_SIZE": "-1"})
    assert bad.returncode == 2
    assert "ASYNCDB_POOL_SIZE must be an integer between 1 and" in bad.stderr
    assert "(got -1)" in bad.stderr
    typo = cli("health", env={"ASYNCDB_POOL_SIZE": "lots"})
    assert "ASYNCDB_POOL_SIZE must be an integer (got 'lots')" in typo.stderr
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    (tmp_path / "x.db").touch()
    empty = cli("health", "--url", url, env={"ASYNCDB_POOL_SIZE": ""})
    assert empty.returncode == 0, empty.stderr  # an empty variable counts as unset


def test_health_on_a_missing_sqlite_file_is_unhealthy_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    done = cli("health", "--url", f"sqlite+aiosqlite:///{path}")
    assert done.returncode == 1
    assert "UNHEALTHY" in done.stdout
    assert "does not exist" in done.stdout
    assert not path.exists()


def test_health_names_credentials_and_database_problems(postgres_url: str) -> None:
    base, _, _ = postgres_url.rpartition("/")
    missing_db = cli("health", "--url", f"{base}/no_such_database_here")
    assert missing_db.returncode == 1
    assert "Check the user, password and database in the URL" in missing_db.stdout
    assert "Check the SQL" not in missing_db.stdout
    wrong_user = cli("health", "--url", POSTGRES_URL.replace("postgres@", "nosuchuser:pw@", 1))
    assert wrong_user.returncode == 1
    assert "Check the SQL" not in wrong_user.stdout
    assert ":pw@" not in wrong_user.stdout
    healthy = cli("health", "--json", "--url", postgres_url)
    assert healthy.returncode == 0
    assert json.loads(healthy.stdout)["healthy"] is True


def test_bench_connection_failure_is_one_line() -> None:
    done = cli("bench", "--quick", "--url", UNREACHABLE)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("asyncdb bench: ")
    assert "Traceback" not in done.stderr


def test_bench_check_refuses_quick() -> None:
    done = cli("bench", "--quick", "--check")
    assert done.returncode == 2
    assert "--check" in done.stderr


def test_bench_quick_prints_no_verdicts(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}"
    done = cli("bench", "--quick", "--rounds", "1", "--workloads", "get_by_id", "--url", url)
    assert done.returncode == 0, done.stderr
    assert "not judged on a --quick smoke run" in done.stdout
    assert "MISSED" not in done.stdout
    assert "wanted" not in done.stdout


def test_metrics_counts_the_connect_connection_and_no_negative_overflow(
    postgres_url: str,
) -> None:
    done = cli("metrics", "--json", "--url", postgres_url)
    assert done.returncode == 0, done.stderr
    pool = json.loads(done.stdout)["pool"]
    assert pool["connections_opened"] >= 1
    assert pool["overflow"] is None or pool["overflow"] >= 0
    text = cli("metrics", "--url", postgres_url).stdout
    assert "overflow -" not in text.replace("overflow -  ", "")


async def test_downgrade_base_asks_first(fresh_url: str) -> None:
    await migrate(fresh_url)
    refused = cli("migrate", "--downgrade", "base", "--url", fresh_url)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert "nothing was changed" in refused.stderr
    status = cli("migrate", "--status", "--url", fresh_url)
    assert status.returncode == 0  # still at head
    done = cli("migrate", "--downgrade", "base", "--yes", "--url", fresh_url)
    assert done.returncode == 0, done.stderr


def test_bench_check_exit_code_follows_the_verdicts(fresh_url: str) -> None:
    args = ["--rounds", "1", "--duration", "0.02", "--workloads", "get_by_id", "--yes"]
    done = cli("bench", "--check", *args, "--url", fresh_url)
    assert done.returncode in {0, 1}, done.stderr
    applies = fresh_url.startswith("postgresql")
    missed = "MISSED" in done.stdout
    # Targets apply to PostgreSQL; on SQLite they are shown for information and never fail.
    assert done.returncode == (1 if applies and missed else 0), done.stdout + done.stderr
    if done.returncode == 1:
        assert "target(s) missed" in done.stderr
