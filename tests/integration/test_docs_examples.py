"""docs/examples/ run as users run them: scripts in a fresh interpreter, tests under pytest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import fresh_mysql_database, fresh_postgres_database
from tests.integration.conftest import skip_unless_supported

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"

# What each script must print (a line each), on every backend.
SCRIPTS = {
    "quickstart.py": [
        "books: 4",
        "since 1980: ['Neuromancer', 'Hyperion']",
        "after the unit: 3 visible books",
        "audit: SOFT_DELETE #4 by librarian-1",
    ],
    "unit_of_work.py": [
        "unchanged: {'ada': '70.00', 'bob': '50.00'}",
        "committed: the welcome e-mail can go out",
        "after run_tx: {'ada': '60.00', 'bob': '60.00', 'cyd': '5.00'}",
    ],
    "audit_trail.py": ["rows of the request: 2"],
    "metrics_health.py": ["after reset: 0"],
}


#: Features of the capability table an example shows (it is skipped where they are ✗).
SCRIPT_NEEDS = {"unit_of_work.py": ("savepoint",)}


@pytest.fixture
def example_url(backend: str, db_url: str, tmp_path: Path) -> Iterator[str]:
    """``db_url``, but a PostgreSQL/MariaDB database of its own: the examples run the toolkit's
    migrations, which refuse tables that other tests created without them; and a DuckDB
    file of its own, as the example runs in another process (the matrix's file is held
    open by this one)."""
    if backend == "duckdb":
        yield f"duckdb+aioduckdb:///{tmp_path / 'example.duckdb'}"
        return
    if backend == "mariadb":
        with fresh_mysql_database("asyncdb_ex") as url:
            yield url
        return
    if backend != "postgres":
        yield db_url
        return
    with fresh_postgres_database("asyncdb_ex") as url:
        yield url


# (a float is printed as 0.0012 or, when small enough, as 5.2e-05 or 9e-05)
_VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\d+(?:\.\d+)?e[-+]?\d+|\d+\.\d+"
)


def steady(output: str) -> str:
    """``output`` without what differs between any two runs: request ids, timings."""
    return _VOLATILE.sub("…", output)


def run(args: list[str], url: str | None, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCDB_")}
    if url is not None:
        env["ASYNCDB_URL"] = url
    return subprocess.run(
        [sys.executable, "-W", "error", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_example_script(
    script: str, backend: str, example_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    for feature in SCRIPT_NEEDS.get(script, ()):
        request.applymarker(pytest.mark.requires(feature))
    skip_unless_supported(request, backend)
    result = run([str(EXAMPLES / script)], example_url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # -W error fails the run on a warning; one raised during garbage collection (a
    # connection never returned, say) is only printed, so look for it too.
    assert "Exception ignored" not in result.stderr, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    lines = result.stdout.splitlines()
    for expected in SCRIPTS[script]:
        assert expected in lines, f"{expected!r} not printed by {script}:\n{result.stdout}"
    if ":memory:" not in example_url:
        again = run([str(EXAMPLES / script)], example_url, tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert steady(again.stdout) == steady(result.stdout), "a second run printed otherwise"


@pytest.mark.slow
def test_example_scripts_default_to_a_sqlite_file(tmp_path: Path) -> None:
    result = run([str(EXAMPLES / "metrics_health.py")], None, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "asyncdb.sqlite3").exists()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite-file", "postgres"])
def test_fastapi_example_tests_pass(backend: str, example_url: str, tmp_path: Path) -> None:
    args = ["-m", "pytest", str(EXAMPLES / "test_fastapi_app.py"), "-q", "-p", "no:cacheprovider"]
    args += ["-n", "0"]  # one process: the example's tests share the database they are given
    if backend == "postgres":
        args.append(f"--asyncdb-url={example_url}")
    result = run([*args, f"--basetemp={tmp_path / 'pytest'}"], None, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite-file", "postgres"])
def test_conduit_example_tests_pass(backend: str, example_url: str, tmp_path: Path) -> None:
    """Every endpoint of the Conduit example, with its statement count per request."""
    args = ["-m", "pytest", str(EXAMPLES / "test_conduit_app.py"), "-q", "-p", "no:cacheprovider"]
    args += ["-n", "0"]  # one process: the example's tests share the database they are given
    if backend == "postgres":
        args.append(f"--asyncdb-url={example_url}")
    result = run([*args, f"--basetemp={tmp_path / 'pytest'}"], None, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed" in result.stdout


@pytest.mark.slow
def test_fastapi_example_app_starts_serves_and_stops(example_url: str, tmp_path: Path) -> None:
    driver = textwrap.dedent(
        """
        import asyncio, sys
        import httpx
        sys.path.insert(0, sys.argv[1])
        from fastapi_app import app
        from asyncdb import get_db_manager

        async def main():
            async with app.router.lifespan_context(app):
                db = get_db_manager()
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                    health = await c.get("/health")
                    created = await c.post(
                        "/todos", json={"title": "t"}, headers={"X-User-ID": "u"}
                    )
                    history = await c.get(f"/todos/{created.json()['id']}/history")
                print(health.status_code, created.status_code, history.json()[0]["user"])
            print(db.state.value)

        asyncio.run(main())
        """
    )
    result = run(["-c", driver, str(EXAMPLES)], example_url, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == ["200", "201", "u", "disposed"]
