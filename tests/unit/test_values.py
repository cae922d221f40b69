"""coerce_value: what each column type accepts, converts and refuses."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    Integer,
    LargeBinary,
    Numeric,
    SmallInteger,
    String,
    Time,
    Uuid,
)

from asyncdb import ValidationError
from asyncdb._models import UTCDateTime
from asyncdb._values import coerce_value


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


U = uuid.UUID("12345678-1234-5678-1234-567812345678")

ACCEPTED: list[tuple[Any, Any, Any]] = [
    (Integer(), "25", 25),
    (Integer(), " -3 ", -3),
    (Integer(), 2.0, 2),
    (Integer(), decimal.Decimal("4"), 4),
    (SmallInteger(), 32767, 32767),
    (BigInteger(), 2**63 - 1, 2**63 - 1),
    (Boolean(), "true", True),
    (Boolean(), "Off", False),
    (Boolean(), 1, True),
    (Float(), "1.5", 1.5),
    (Float(), 2, 2.0),
    (Numeric(10, 2), "12.50", decimal.Decimal("12.50")),
    (Numeric(10, 2), 0.1, decimal.Decimal("0.1")),
    (Numeric(), "1e10", decimal.Decimal("1e10")),
    (DateTime(), "2020-01-02T03:04:05Z", dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)),
    (UTCDateTime(), "2020-01-02 03:04:05", dt.datetime(2020, 1, 2, 3, 4, 5)),
    (Date(), "2020-01-02", dt.date(2020, 1, 2)),
    (Time(), "03:04", dt.time(3, 4)),
    (Uuid(), str(U), U),
    (Enum(Mood), "HAPPY", Mood.HAPPY),
    (Enum(Mood), "sad", Mood.SAD),
    (Enum("a", "b", name="ab"), "a", "a"),
    (String(5), "héllo", "héllo"),
    (JSON(), {"a": [1, "b"]}, {"a": [1, "b"]}),
    (LargeBinary(), b"\x00\x01", b"\x00\x01"),
    (Integer(), None, None),
]


@pytest.mark.parametrize(("column_type", "value", "expected"), ACCEPTED)
def test_accepted(column_type: Any, value: Any, expected: Any) -> None:
    assert coerce_value(column_type, value, "f") == expected


REFUSED: list[tuple[Any, Any, str]] = [
    (Integer(), "abc", "integer"),
    (Integer(), "1.5", "integer"),
    (Integer(), 1.5, "whole number"),
    (Integer(), float("nan"), "whole number"),
    (Integer(), True, "integer"),
    (Integer(), 2**31, "out of range"),
    (SmallInteger(), 2**15, "out of range"),
    (BigInteger(), 2**63, "out of range"),
    (Integer(), "9" * 40, "integer"),
    (Boolean(), "maybe", "true or false"),
    (Boolean(), 2, "true or false"),
    (Float(), "inf", "finite"),
    (Float(), "x", "number"),
    (Numeric(10, 2), "1.234", "decimal places"),
    (Numeric(4, 2), "123.4", "out of range"),
    (Numeric(), "NaN", "finite"),
    (Numeric(), [], "number"),
    (DateTime(), "yesterday", "ISO 8601"),
    (DateTime(), dt.date(2020, 1, 1), "date and time"),
    (Date(), dt.datetime(2020, 1, 1), "date"),
    (Date(), "2020-13-01", "YYYY-MM-DD"),
    (Time(), "25:00", "time"),
    (Uuid(), "not-a-uuid", "UUID"),
    (Uuid(), 5, "UUID"),
    (Enum(Mood), "angry", "HAPPY, SAD"),
    (Enum("a", "b", name="ab"), "c", "one of a, b"),
    (String(3), "wxyz", "longer"),
    (String(), 5, "string"),
    (String(), "a\x00", "NUL"),
    (String(), "\udc80", "surrogate"),
    (JSON(), {"x": object()}, "JSON"),
    (JSON(), float("nan"), "JSON"),
    (LargeBinary(), "text", "bytes"),
]


@pytest.mark.parametrize(("column_type", "value", "message"), REFUSED)
def test_refused_with_the_field_named(column_type: Any, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        coerce_value(column_type, value, "myfield")
    assert "myfield" in str(info.value)
    if isinstance(value, str) and len(value) > 3:
        assert value not in str(info.value)  # the value itself is never echoed
