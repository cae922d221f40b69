"""iter_values: a batch taken as it is only when the row-by-row checks would return it
unchanged; every other batch goes row by row, with the same values and errors."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asyncdb import ValidationError
from asyncdb._bulk_rows import iter_values, row_values, with_defaults
from asyncdb._model_info import model_info


class Base(DeclarativeBase):
    """Not asyncdb's Base: this table stays out of the metadata other tests create."""


class Thing(Base):
    __tablename__ = "br_thing"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(10))
    qty: Mapped[int] = mapped_column(default=0)
    note: Mapped[str | None] = mapped_column(String(10), default=None)


INFO = model_info(Thing)


def row_by_row(batch: list[Any]) -> list[dict[str, Any]]:
    return [with_defaults(INFO, row_values(INFO, row, i)) for i, row in enumerate(batch)]


def test_a_plain_batch_is_taken_as_it_is_with_its_defaults() -> None:
    batch = [{"name": f"n{i}", "qty": i} for i in range(100)]
    values, same_keys = iter_values(INFO, batch, 0)
    assert same_keys
    assert list(values) == row_by_row(batch)


@pytest.mark.parametrize(
    "odd",
    [
        {"name": "x", "note": "other key, same count"},  # qty missing, note instead
        {"name": "x", "qty": 1, "note": "one more"},  # a key the first row lacks
        {"name": "x"},  # one key fewer
        {"name": "caf\u00e9", "qty": 1},  # non-ASCII: the checks decide
        {"name": "nul\x00", "qty": 1},  # NUL: refused row by row
        {"name": "x" * 11, "qty": 1},  # too long: refused row by row
        {"name": "x", "qty": True},  # a bool for an integer
    ],
)
def test_any_odd_row_sends_the_batch_row_by_row(odd: dict[str, Any]) -> None:
    batch = [{"name": f"n{i}", "qty": i} for i in range(60)]
    batch[37] = odd
    values, same_keys = iter_values(INFO, batch, 0)
    assert not same_keys
    try:
        expected: list[dict[str, Any]] | str = row_by_row(batch)
    except ValidationError as exc:
        expected = str(exc)
    try:
        got: list[dict[str, Any]] | str = list(values)
    except ValidationError as exc:
        got = str(exc)
    assert got == expected
    if isinstance(got, str):
        assert "Row 37" in got
