"""column_check_for: the batch form of the value checks never accepts what they would not
return unchanged, and accepts the plain batches bulk writes send."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
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
    Text,
    Time,
    Uuid,
)
from sqlalchemy import types as sa_types

from asyncdb import ValidationError
from asyncdb._models import UTCDateTime
from asyncdb._values import checker_for, column_check_for
from tests.conftest import examples


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Level(enum.IntEnum):
    LOW = 1


TYPES: list[sa_types.TypeEngine[Any]] = [
    Integer(),
    SmallInteger(),
    BigInteger(),
    String(5),
    String(),
    Text(),
    Enum(Mood),
    Enum("a", "b", name="letters"),
    Boolean(),
    Float(),
    Numeric(6, 2),
    DateTime(timezone=True),
    UTCDateTime(),
    Date(),
    Time(),
    Uuid(),
    JSON(),
    LargeBinary(),
]

# Values of every kind the checks accept, convert or refuse, edge cases included.
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([2**15 - 1, 2**15, -(2**15) - 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63]),
    st.text(max_size=8),
    st.sampled_from(["ok", "abcde", "abcdef", "a\x00b", "é", "\ud800", "25", "true", "HAPPY"]),
    st.floats(allow_nan=True),
    st.decimals(allow_nan=False, places=3),
    st.sampled_from([Mood.HAPPY, Level.LOW, uuid.UUID(int=5), b"x", bytearray(b"y")]),
    st.datetimes(timezones=st.just(dt.timezone.utc)),
    st.dates(),
    st.times(),
    st.lists(st.integers(), max_size=2),
)


def _unchanged(column_type: sa_types.TypeEngine[Any], value: Any) -> bool:
    try:
        return checker_for(column_type, "f")(value) is value
    except ValidationError:
        return False


@pytest.mark.parametrize("column_type", TYPES, ids=lambda t: repr(t))
@settings(max_examples=examples(150), deadline=None)
@given(values=st.lists(VALUES, min_size=1, max_size=6))
def test_an_accepted_column_passes_every_value_unchanged(
    column_type: sa_types.TypeEngine[Any], values: list[Any]
) -> None:
    if column_check_for(column_type)(values):
        assert all(_unchanged(column_type, v) for v in values), values


@pytest.mark.parametrize(
    ("column_type", "values"),
    [
        (Integer(), [1, None, -(2**31), 2**31 - 1]),
        (BigInteger(), [2**63 - 1, None]),
        (String(5), ["abcde", None, ""]),
        (Text(), ["x" * 10_000]),
        (Enum(Mood), [Mood.SAD, None]),
        (Boolean(), [True, False, None]),
        (DateTime(timezone=True), [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)]),
        (UTCDateTime(), [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), None]),
        (Time(), [dt.time(1, 2)]),
        (Uuid(), [uuid.UUID(int=1)]),
        (Numeric(6, 2), [None, None]),
    ],
)
def test_plain_batches_take_the_batch_path(
    column_type: sa_types.TypeEngine[Any], values: list[Any]
) -> None:
    assert column_check_for(column_type)(values)


@pytest.mark.parametrize(
    ("column_type", "values"),
    [
        (Integer(), [1, True]),  # a bool is refused one by one
        (Integer(), [1, 2**31]),  # out of range
        (SmallInteger(), [2**15]),
        (Integer(), [1, "2"]),  # converted one by one
        (Integer(), [Level.LOW]),
        (String(5), ["abcdef"]),  # too long
        (String(5), ["a\x00"]),  # NUL
        (String(), ["é"]),  # not ASCII: checked one by one
        (String(), [1]),
        (Enum(Mood), ["HAPPY"]),  # converted one by one
        (Boolean(), [1]),
        (Numeric(6, 2), [decimal.Decimal("1.5")]),  # no batch path: checked one by one
        (Float(), [1.5]),
        (Date(), [dt.date(2026, 1, 1)]),
        (JSON(), [{"a": 1}]),
        (LargeBinary(), [b"x"]),
    ],
)
def test_anything_else_is_left_to_the_value_checks(
    column_type: sa_types.TypeEngine[Any], values: list[Any]
) -> None:
    assert not column_check_for(column_type)(values)
