"""The capability table: one source, rendered in docs/backends.md, enforced by require()."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncdb import UnsupportedFeatureError
from asyncdb._capabilities import FEATURES, render_markdown, require, supports

DOC = Path(__file__).resolve().parents[2] / "docs" / "backends.md"


def test_docs_backends_page_shows_the_capability_table_as_the_code_has_it() -> None:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("<!-- capabilities:start -->\n") + len("<!-- capabilities:start -->\n")
    end = text.index("<!-- capabilities:end -->")
    assert text[start:end] == render_markdown()


def test_every_unsupported_cell_has_a_reason() -> None:
    for feature, (_, cells) in FEATURES.items():
        for backend, cell in cells.items():
            assert cell.supported or cell.note, (feature, backend)


def test_require_names_the_feature_and_the_backend() -> None:
    assert supports("postgresql", "savepoint")
    require("postgresql", "savepoint")
    with pytest.raises(UnsupportedFeatureError, match="DuckDB does not support savepoint") as info:
        require("duckdb", "savepoint")
    assert info.value.feature == "savepoint"
    assert info.value.backend == "duckdb"
    with pytest.raises(ValueError, match="Unknown feature"):
        supports("duckdb", "teleportation")
