"""``each_case`` runs every row and names each row that failed."""

from __future__ import annotations

import inspect

import pytest

from tests.cases import each_case

seen: list[tuple[str, int]] = []


@each_case(("word", "length"), [("one", 3), pytest.param("three", 4, id="wrong"), ("", 1)])
async def check_lengths(prefix: str, word: str, length: int) -> None:
    seen.append((word, length))
    assert len(prefix + word) == length


async def test_every_case_runs_and_each_failure_is_named() -> None:
    seen.clear()
    with pytest.raises(pytest.fail.Exception) as caught:
        await check_lengths(prefix="")
    assert seen == [("one", 3), ("three", 4), ("", 1)]
    message = str(caught.value)
    assert message.startswith("2 of 3 cases failed:")
    assert "[wrong] AssertionError" in message and "[2: '', 1] AssertionError" in message
    assert "[0:" not in message


async def test_pytest_sees_only_the_fixtures() -> None:
    assert list(inspect.signature(check_lengths).parameters) == ["prefix"]
    seen.clear()
    await each_case("n", [1, 2])(_record)(label="x")
    assert seen == [("x", 1), ("x", 2)]


async def _record(label: str, n: int) -> None:
    seen.append((label, n))
