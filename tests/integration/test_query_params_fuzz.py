"""Arbitrary query parameters, passed straight in as a web app would (issue 14 acceptance).

``repo.find_by(**request.query_params)``: whatever arrives, the answer is a result or a
ValidationError, and a ValidationError means no statement reached the database.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncdb import AsyncDatabaseManager, Repository, ValidationError
from tests.conftest import examples
from tests.integration.models import Item
from tests.integration.test_repository import counting

FIELDS = ["id", "name", "sku", "qty", "category", "created_at", "deleted_at", "password"]
OPS = ["", "__in", "__not_in", "__ne", "__lt", "__lte", "__gt", "__gte", "__like", "__ilike"]
OPS += ["__is_null", "__bogus"]
SPECIAL = ["page", "page_size", "limit", "offset", "order_by", "with_deleted", "after"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["25", "-1", "true", "false", "2020-01-01", "a\x00b", "\ud800", "%", ""]),
    st.sampled_from(["9" * 40, "1e400", "nan", "name", "-name", "qty", "-id"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=8)
keys = st.one_of(
    st.builds(lambda f, o: f + o, st.sampled_from(FIELDS), st.sampled_from(OPS)),
    st.sampled_from(SPECIAL),
    st.text(min_size=1, max_size=12),
)
params = st.dictionaries(keys, values, max_size=4)


@settings(
    max_examples=examples(100),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=params, method=st.sampled_from(["find_by", "count", "paginate", "keyset"]))
async def test_query_params_give_a_result_or_a_validation_error_before_sql(
    db: AsyncDatabaseManager, query: dict[str, Any], method: str
) -> None:
    items = Repository(Item, db)
    if await items.count() == 0:
        await items.bulk_create([{"name": f"n{i}", "qty": i, "sku": f"s{i}"} for i in range(5)])
    call = {
        "find_by": items.find_by,
        "count": items.count,
        "paginate": items.paginate,
        "keyset": items.paginate_keyset,
    }[method]
    with counting(db) as seen:
        try:
            await call(**query)
        except ValidationError:
            assert seen == [], f"{method}({query!r}) sent SQL before refusing it"
    assert await items.count() == 5  # nothing was changed by any read
