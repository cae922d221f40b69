"""The per-field canonical content (``_audit_batch``) is byte for byte the chain's own."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from typing import Any

import pytest

from asyncdb._audit_batch import content_hash, content_text, field_texts, waves
from asyncdb._audit_chain import CHAIN_FIELDS, _plain, canonical_json, content_digest

ROWS: list[dict[str, Any]] = [
    {name: None for name in CHAIN_FIELDS},
    {
        "table_name": "t_item",
        "entity_id": "7",
        "action": "UPDATE",
        "occurred_at": dt.datetime(2024, 2, 29, 23, 59, 59, tzinfo=dt.timezone.utc),
        "user_id": 'ü"\n\\',
        "session_id": "s",
        "correlation_id": "\u2028\x00",
        "old_values": {"b": 1.5, "a": [1, None, True], "z": {"y": 1e16, "x": -0.0}},
        "new_values": {"b": 2, "a": "ß", "€": {}},
        "changed_fields": ["a", "b"],
        "extra": {"tenant": "t"},
    },
    {
        "table_name": "t",
        "entity_id": '[1, "a"]',
        "action": "CREATE",
        "occurred_at": dt.datetime(2024, 1, 1, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "new_values": {"n": 10**30, "f": 0.1},
    },
    {"table_name": "t", "entity_id": "1", "occurred_at": dt.datetime(2024, 1, 1)},
]


@pytest.mark.parametrize("row", ROWS)
def test_content_is_the_chains_canonical_json(row: dict[str, Any]) -> None:
    texts = field_texts(row)
    assert content_text(texts) == canonical_json({n: row.get(n) for n in CHAIN_FIELDS})
    assert content_hash(texts) == content_digest(row)


VALUES: list[Any] = [
    *(value for row in ROWS for value in row.values()),
    "plain",
    {"nan": math.nan, "inf": math.inf, "neg": -math.inf, "d": decimal.Decimal("1E-8")},
    [dt.date(2024, 2, 29), dt.datetime(2024, 1, 1, 0, 0, 0, 5), {"k": [[], {}]}],
    12345678901234567890,
    -0.0,
    True,
    None,
]


@pytest.mark.parametrize("value", VALUES)
def test_canonical_json_is_json_dumps_with_the_chains_settings(value: Any) -> None:
    expected = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
    )
    assert canonical_json(value) == expected


def test_waves_keep_each_chain_once_and_in_order() -> None:
    rows = [
        {"table_name": "t", "entity_id": e, "n": n}
        for n, e in enumerate(["1", "2", "1", "1", "3", "2"])
    ]
    parts = [[(r["entity_id"], r["n"]) for r in w] for w in waves(rows)]
    assert parts == [[("1", 0), ("2", 1), ("3", 4)], [("1", 2), ("2", 5)], [("1", 3)]]
