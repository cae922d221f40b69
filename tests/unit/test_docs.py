"""The documentation: references complete, examples included, the site builds strictly."""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import asyncdb
from asyncdb import DatabaseSettings
from asyncdb import _settings as settings_module

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"


def field_comments() -> dict[str, str]:
    """The ``#:`` comment above each DatabaseSettings field, as one line."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    # From the module's file: DatabaseSettings reports __module__ "asyncdb".
    source = inspect.getsource(settings_module)
    body = source[source.index("class DatabaseSettings") :]
    class_body = body.split("\n", 1)[1]
    body = re.split(r"\n(?=\S)", class_body, maxsplit=1)[0]  # up to the next top-level line
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+):", stripped)
        if match and pending:
            comments[match.group(1)] = " ".join(pending)
        pending = []
    return comments


def expected_row(field: dataclasses.Field[object]) -> str:
    default = field.default
    shown = default if isinstance(default, str) else repr(default)
    return f"| `{field.name}` | `ASYNCDB_{field.name.upper()}` | `{shown}` |"


def test_configuration_reference_lists_every_setting() -> None:
    page = (DOCS / "configuration.md").read_text()
    rows = [line for line in page.splitlines() if re.match(r"\| `\w+` \| `ASYNCDB_", line)]
    documented = {re.match(r"\| `(\w+)`", row).group(1) for row in rows}  # type: ignore[union-attr]
    fields = dataclasses.fields(DatabaseSettings)
    comments = field_comments()
    missing = [
        f"{expected_row(f)} {comments.get(f.name, 'what it does')} |"
        for f in fields
        if not any(row.startswith(expected_row(f)) for row in rows)
    ]
    assert not missing, "docs/configuration.md lacks (or has stale) rows:\n" + "\n".join(missing)
    assert documented == {f.name for f in fields}, (
        "docs/configuration.md documents unknown settings"
    )
    for row in rows:
        meaning = row.rstrip(" |").rsplit("|", 1)[-1].strip()
        assert meaning, f"a setting without its meaning: {row}"


def test_errors_reference_lists_every_exception() -> None:
    page = (DOCS / "errors.md").read_text()
    errors = [
        name
        for name in asyncdb.__all__
        if isinstance(getattr(asyncdb, name), type)
        and issubclass(getattr(asyncdb, name), BaseException)
    ]
    assert "AsyncDBError" in errors
    for name in errors:
        assert f"## `{name}`" in page, f"docs/errors.md has no section for {name}"
        assert re.search(rf"[├└]── {name}\b|^{name}$", page, re.MULTILINE), (
            f"{name} is missing from the tree in docs/errors.md"
        )


def test_every_example_is_runnable_and_shown_in_a_page() -> None:
    pages = "\n".join(p.read_text() for p in DOCS.glob("*.md"))
    examples = sorted(EXAMPLES.glob("*.py"))
    assert examples
    for example in examples:
        name = example.name
        assert f'--8<-- "examples/{name}"' in pages or f"`{name}`" in pages, name
        source = example.read_text()
        if not name.startswith("test_"):
            assert re.search(r"^(async )?def main\(\) -> None:", source, re.MULTILINE), name
            assert 'if __name__ == "__main__":' in source, name


@pytest.mark.slow
def test_docs_build_in_strict_mode(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.fail("mkdocs is not installed: pip install -e '.[dev]'")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").exists()
