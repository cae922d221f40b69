"""The typed call sites of ``tests/typing/check_types.py`` pass ``mypy --strict``, and a
wrong one fails it (so the check cannot pass vacuously)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ROOT / "tests" / "typing" / "check_types.py"

pytestmark = pytest.mark.slow


def mypy(target: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache), str(target)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_typed_call_sites_pass_mypy_strict(tmp_path: Path) -> None:
    done = mypy(CHECKS, tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_type_fails_the_check(tmp_path: Path) -> None:
    broken = tmp_path / "broken_types.py"
    broken.write_text(
        CHECKS.read_text()
        + "\n\nasync def wrong(db: AsyncDatabaseManager) -> None:\n"
        + "    assert_type(await Repository(User, db).get(1), int)\n"
    )
    done = mypy(broken, tmp_path / "cache")
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'Expression is of type "User", not "int"' in done.stdout
