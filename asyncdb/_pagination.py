"""Page and KeysetPage, and the opaque, signed keyset cursor."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import uuid
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import and_, false, or_

from ._errors import ValidationError

__all__ = [
    "CursorCodec",
    "KeysetPage",
    "Page",
    "check_cursor_values",
    "codec_for_secrets",
    "keyset_after",
]

logger = logging.getLogger("asyncdb")

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Page(Generic[T]):
    """One page of an offset pagination."""

    items: list[T]
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        """How many pages ``total`` rows make (0 when there are none)."""
        return math.ceil(self.total / self.page_size) if self.total else 0

    @property
    def has_next(self) -> bool:
        """True when a later page holds rows."""
        return self.page < self.pages

    @property
    def has_previous(self) -> bool:
        """True for every page after the first."""
        return self.page > 1


@dataclasses.dataclass(frozen=True)
class KeysetPage(Generic[T]):
    """One page of a keyset pagination; pass ``next_cursor`` as ``after=``."""

    items: list[T]
    next_cursor: str | None
    has_more: bool


def _encode_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"f": repr(value)}
    if isinstance(value, dt.datetime):
        return {"dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"d": value.isoformat()}
    if isinstance(value, dt.time):
        return {"t": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"n": str(value)}
    if isinstance(value, uuid.UUID):
        return {"u": str(value)}
    if isinstance(value, bytes):
        return {"b": base64.b64encode(value).decode()}
    if hasattr(value, "value") and hasattr(type(value), "__members__"):  # an Enum
        return {"e": value.name}
    msg = f"Cannot put a {type(value).__name__} into a keyset cursor; order by another column."
    raise ValidationError(msg)


_DECODERS: dict[str, Any] = {
    "f": float,
    "dt": dt.datetime.fromisoformat,
    "d": dt.date.fromisoformat,
    "t": dt.time.fromisoformat,
    "n": decimal.Decimal,
    "u": uuid.UUID,
    "b": lambda s: base64.b64decode(s.encode(), validate=True),
    "e": str,
}


def _decode_value(raw: Any) -> Any:
    if raw is None or isinstance(raw, (bool, int, str)):
        return raw
    if isinstance(raw, dict) and len(raw) == 1:
        ((tag, text),) = raw.items()
        if tag in _DECODERS and isinstance(text, str):
            return _DECODERS[tag](text)
    raise ValueError("bad cursor value")


class CursorCodec:
    """Encodes the sort values of a page's last row into an opaque, HMAC-signed token.

    The token names its table and ordering, so a cursor from another table or
    another ``order_by`` is refused, and its signature makes any edit detectable.
    The first key signs; every key verifies, so a secret can be rotated without
    invalidating the cursors already handed out.
    """

    def __init__(self, key: bytes | Sequence[bytes]) -> None:
        keys = (key,) if isinstance(key, bytes) else tuple(key)
        if not keys:
            msg = "CursorCodec needs at least one key."
            raise ValueError(msg)
        self._keys = keys

    @staticmethod
    def _mac(key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, payload, hashlib.sha256).digest()[:16]

    def encode(self, scope: str, values: Sequence[Any]) -> str:
        """A cursor for ``values`` in ``scope`` (table and ordering)."""
        body = json.dumps(
            {"s": scope, "v": [_encode_value(v) for v in values]}, separators=(",", ":")
        ).encode()
        token = self._mac(self._keys[0], body) + body
        return base64.urlsafe_b64encode(token).decode().rstrip("=")

    def decode(self, scope: str, cursor: str, width: int) -> list[Any]:
        """The values in ``cursor``; :class:`ValidationError` if tampered or foreign."""
        invalid = (
            "The pagination cursor is invalid: it was altered, or it belongs to another "
            "query. Start again without `after`, and pass back next_cursor unchanged."
        )
        if not isinstance(cursor, str) or not cursor or len(cursor) > 4096:
            raise ValidationError(invalid)
        try:
            token = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError) as exc:
            raise ValidationError(invalid) from exc
        signature, body = token[:16], token[16:]
        if len(signature) < 16 or not any(
            hmac.compare_digest(signature, self._mac(key, body)) for key in self._keys
        ):
            raise ValidationError(invalid)
        try:
            data = json.loads(body)
            values = [_decode_value(v) for v in data["v"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationError(invalid) from exc
        if data.get("s") != scope or len(values) != width:
            raise ValidationError(invalid)
        return values


_KEY_CONTEXT = b"asyncdb-keyset-cursor\0"
_process_secret: bytes | None = None
_process_secret_lock = threading.Lock()


def _random_process_secret() -> bytes:
    """One random secret per process, made on first use and announced once."""
    global _process_secret  # one lazily made value per process
    with _process_secret_lock:
        if _process_secret is None:
            _process_secret = secrets.token_bytes(32)
            logger.warning(
                "No cursor_secret is set (ASYNCDB_CURSOR_SECRET): keyset cursors are signed "
                "with a random per-process secret, so they stop working after a restart "
                "and are not accepted by other processes. Set cursor_secret to keep them."
            )
        return _process_secret


def codec_for_secrets(cursor_secrets: Sequence[str] | None) -> CursorCodec:
    """The codec for the configured secrets (first signs, all verify).

    With no secret configured, a random per-process secret is used (and a warning
    logged once). The key is never derived from the database URL or its credentials.
    """
    raw = [s.encode() for s in cursor_secrets] if cursor_secrets else [_random_process_secret()]
    return CursorCodec([hashlib.sha256(_KEY_CONTEXT + secret).digest() for secret in raw])


def _python_type(column: Any) -> type | None:
    try:
        return column.type.python_type  # type: ignore[no-any-return]
    except (NotImplementedError, AttributeError):
        return None


def _value_fits(expected: type, value: Any) -> bool:
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is decimal.Decimal:
        return isinstance(value, (decimal.Decimal, int)) and not isinstance(value, bool)
    if expected is dt.datetime:
        return isinstance(value, dt.datetime)
    if expected is dt.date:
        return isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    if hasattr(expected, "__members__"):  # an Enum: the cursor carries the member's name
        return isinstance(value, str) and value in expected.__members__
    return isinstance(value, expected)


def check_cursor_values(
    model: type[Any], order: Sequence[tuple[str, bool]], values: Sequence[Any]
) -> list[Any]:
    """``values`` checked against the sort columns' types, before any SQL.

    A validly signed cursor whose values do not fit the columns (a secret leaked, an
    old cursor after a schema change) is a :class:`ValidationError`, never a query.
    Enum values come back as members.
    """
    checked: list[Any] = []
    for (field, _), value in zip(order, values, strict=True):
        column = getattr(model, field)
        if value is None:
            if not getattr(column, "nullable", True) or getattr(column, "primary_key", False):
                msg = (
                    f"The pagination cursor holds no value for {field!r}, which cannot be "
                    "NULL. Start again without `after`."
                )
                raise ValidationError(msg)
            checked.append(None)
            continue
        expected = _python_type(column)
        if expected is not None and not _value_fits(expected, value):
            msg = (
                f"The pagination cursor's value for {field!r} does not fit the column's type. "
                "Start again without `after`, and pass back next_cursor unchanged."
            )
            raise ValidationError(msg)
        if expected is not None and hasattr(expected, "__members__"):
            value = expected.__members__[value]
        checked.append(value)
    return checked


def keyset_after(model: type[Any], order: Sequence[tuple[str, bool]], values: Sequence[Any]) -> Any:
    """The condition "strictly after ``values``" in ``order`` (NULLs sort last either way).

    ``(a, b) after (va, vb)`` is ``a beyond va OR (a = va AND b beyond vb)``. The
    ``OR column IS NULL`` that NULLs-last needs is added only for nullable columns: on a
    primary key it would stop PostgreSQL from using the index as a range condition.
    """
    clauses = []
    first_col = getattr(model, order[0][0]) if order else None
    for i, (field, descending) in enumerate(order):
        col = getattr(model, field)
        equal = [
            getattr(model, f).is_(None) if v is None else getattr(model, f) == v
            for (f, _), v in zip(order[:i], values[:i], strict=False)
        ]
        value = values[i]
        if value is None:
            continue  # nothing sorts after NULL in this column but more NULLs
        beyond = col < value if descending else col > value
        if _nullable(col):
            beyond = or_(beyond, col.is_(None))
        clauses.append(and_(*equal, beyond))
    if not clauses:
        return false()
    condition = or_(*clauses)
    if len(clauses) > 1 and first_col is not None and not _nullable(first_col):
        # The same rows, plus a plain range on the leading column that an index can
        # start from; the OR alone is only a filter, and a deep page would walk the
        # index from its first entry.
        lead = values[0]
        bound = first_col <= lead if order[0][1] else first_col >= lead
        condition = and_(bound, condition)
    return condition


def _nullable(column: Any) -> bool:
    return bool(getattr(column, "nullable", True)) and not column.primary_key
