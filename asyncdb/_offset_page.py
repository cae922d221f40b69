"""OffsetPage: a slice of rows in limit/offset terms, with the total count."""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar

__all__ = ["OffsetPage"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class OffsetPage(Generic[T]):
    """``limit`` rows from ``offset`` on, and how many rows match in all.

    What :meth:`~asyncdb.Repository.paginate_offset` returns, for APIs that speak
    ``?limit=20&offset=40`` rather than page numbers.
    """

    items: list[T]
    total: int
    limit: int
    offset: int

    @property
    def has_next(self) -> bool:
        """True when rows follow this slice."""
        return self.offset + len(self.items) < self.total

    @property
    def has_previous(self) -> bool:
        """True when rows come before this slice."""
        return self.offset > 0 and self.total > 0
