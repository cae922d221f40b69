"""Streamed results that raise asyncdb errors while they are read.

``session.stream(...)`` returns an ``AsyncResult`` whose rows come from the server as
they are read: an error the server sends mid-stream (a statement timeout, a division by
zero at row 500, a lost connection) is raised by ``fetchmany()``, ``async for`` or
``partitions()``, not by ``stream()`` itself. A toolkit session's results are these
subclasses, whose reading methods translate such errors as the session's own methods do
(a driver's own exception too: asyncpg's server-side cursor raises it unwrapped from a
fetch); ``scalars()`` and ``mappings()`` keep the class.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio.result import AsyncMappingResult, AsyncResult, AsyncScalarResult

from ._translate import raise_translated, translated

__all__ = [
    "ToolkitAsyncMappingResult",
    "ToolkitAsyncResult",
    "ToolkitAsyncScalarResult",
    "toolkit_result",
]

Result = TypeVar("Result")


def _reading_partitions(
    method: Callable[..., AsyncIterator[Any]],
) -> Callable[..., AsyncIterator[Any]]:
    @functools.wraps(method)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            async for partition in method(self, *args, **kwargs):
                yield partition
        except Exception as exc:
            raise_translated(exc)

    wrapper.__asyncdb_translated__ = True  # type: ignore[attr-defined]
    return wrapper


def _translate_reads(cls: type[Result]) -> type[Result]:
    """Wrap every coroutine method and async generator (``partitions``) of ``cls``'s
    SQLAlchemy base, ``__anext__`` included."""
    base = cls.__mro__[1]
    for name in dir(base):
        if name.startswith("_") and name != "__anext__":
            continue
        method = getattr(base, name)
        if inspect.iscoroutinefunction(method):
            setattr(cls, name, translated(method))
        elif inspect.isasyncgenfunction(method):
            setattr(cls, name, _reading_partitions(method))
    return cls


@_translate_reads
class ToolkitAsyncScalarResult(AsyncScalarResult[Any]):
    """``AsyncScalarResult`` raising asyncdb errors while read."""

    __slots__ = ()  # the same layout as its base: the class of a result is swapped


@_translate_reads
class ToolkitAsyncMappingResult(AsyncMappingResult):
    """``AsyncMappingResult`` raising asyncdb errors while read."""

    __slots__ = ()  # the same layout as its base: the class of a result is swapped


@_translate_reads
class ToolkitAsyncResult(AsyncResult[Any]):
    """``AsyncResult`` raising asyncdb errors while read."""

    __slots__ = ()  # the same layout as its base: the class of a result is swapped

    def scalars(self, index: Any = 0) -> Any:
        return toolkit_result(super().scalars(index))

    def mappings(self) -> Any:
        return toolkit_result(super().mappings())


_TOOLKIT: dict[type[Any], type[Any]] = {
    AsyncResult: ToolkitAsyncResult,
    AsyncScalarResult: ToolkitAsyncScalarResult,
    AsyncMappingResult: ToolkitAsyncMappingResult,
}


def toolkit_result(result: Result) -> Result:
    """``result`` as the toolkit's subclass of its class (the same object: only its
    class changes; a class it does not know is left as it is)."""
    toolkit = _TOOLKIT.get(type(result))
    if toolkit is not None:
        result.__class__ = toolkit
    return result
