"""``each_case``: a table of cases checked inside one test per backend.

A refusal table ("this input is refused before any SQL, the data intact") has dozens of
rows, each checked in milliseconds against a database its fixtures took far longer to
create and seed. ``@pytest.mark.parametrize`` pays that set-up for every row on every
backend; ``@each_case`` takes the same arguments and runs every row against one set-up,
then fails once, naming every row that failed (not only the first).

Use it only where a row leaves the fixtures as it found them (a row that fails may not:
read the first failure first).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import pytest
from _pytest.mark.structures import ParameterSet

Test = TypeVar("Test", bound=Callable[..., Coroutine[Any, Any, None]])


def _label(values: tuple[Any, ...], case: Any, index: int) -> str:
    if isinstance(case, ParameterSet) and case.id is not None:
        return case.id
    text = ", ".join(repr(value) for value in values)
    return f"{index}: {text[:120]}"


def each_case(argnames: str | Sequence[str], cases: Sequence[Any]) -> Callable[[Test], Test]:
    """Like ``pytest.mark.parametrize(argnames, cases)``, but one test runs every case."""
    names = (
        [name.strip() for name in argnames.split(",")]
        if isinstance(argnames, str)
        else list(argnames)
    )

    def decorate(test: Test) -> Test:
        signature = inspect.signature(test)
        fixtures = [p for p in signature.parameters.values() if p.name not in names]

        @functools.wraps(test)
        async def every_case(**kwargs: Any) -> None:
            failures = []
            for index, case in enumerate(cases):
                values = tuple(case.values) if isinstance(case, ParameterSet) else case
                if len(names) == 1 and not isinstance(case, ParameterSet):
                    values = (case,)
                try:
                    await test(**kwargs, **dict(zip(names, values, strict=True)))
                except (Exception, pytest.fail.Exception) as exc:
                    failures.append(f"[{_label(values, case, index)}] {type(exc).__name__}: {exc}")
            if failures:
                pytest.fail(
                    f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures),
                    pytrace=False,
                )

        del every_case.__wrapped__  # type: ignore[attr-defined]  # pytest reads the signature
        every_case.__signature__ = signature.replace(parameters=fixtures)  # type: ignore[attr-defined]
        return every_case  # type: ignore[return-value]

    return decorate
