"""Property-based test: the repository agrees with a plain in-memory model of the table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from asyncdb import AsyncDatabaseManager, NotFoundError, Repository, ValidationError
from tests.integration.models import Item


@dataclass
class Row:
    name: str
    qty: int
    deleted: bool = False


names = st.text(alphabet="abcxyz", min_size=1, max_size=5)
qtys = st.integers(min_value=-5, max_value=5)
picks = st.integers(min_value=0, max_value=1000)
ops = st.one_of(
    st.tuples(st.just("create"), names, qtys),
    st.tuples(st.just("update"), picks, qtys),
    st.tuples(st.just("delete"), picks, st.sampled_from([None, True, False])),
    st.tuples(st.just("restore"), picks),
    st.tuples(st.just("bulk_create"), st.lists(st.tuples(names, qtys), max_size=6)),
    st.tuples(st.just("bulk_update"), st.lists(st.tuples(picks, qtys), max_size=4)),
    st.tuples(
        st.just("bulk_delete"), st.lists(picks, max_size=4), st.sampled_from([None, True, False])
    ),
    st.tuples(st.just("update_by"), qtys, qtys),
    st.tuples(st.just("delete_by"), qtys, st.sampled_from([None, True, False]), st.booleans()),
)


async def apply(repo: Repository[Item], model: dict[int, Row], op: tuple[Any, ...]) -> None:
    ids = sorted(model)
    kind = op[0]
    if kind == "create":
        item = await repo.create(name=op[1], qty=op[2])
        model[item.id] = Row(op[1], op[2])
    elif kind == "bulk_create":
        before = set(model)
        await repo.bulk_create([{"name": n, "qty": q} for n, q in op[1]])
        new_ids = sorted(i.id for i in await repo.get_all(with_deleted=True) if i.id not in before)
        for new_id, (n, q) in zip(new_ids, op[1], strict=True):
            model[new_id] = Row(n, q)
    elif kind == "update_by":
        # qty=op[1] on live rows becomes op[2]
        matching = [k for k, r in model.items() if not r.deleted and r.qty == op[1]]
        assert await repo.update_by({"qty": op[2]}, qty=op[1]) == len(matching)
        for k in matching:
            model[k].qty = op[2]
    elif kind == "delete_by":
        soft, with_deleted = op[2] is not False, op[3] and op[2] is False
        matching = [
            k for k, r in model.items() if r.qty == op[1] and (not r.deleted or with_deleted)
        ]
        deleted = await repo.delete_by(soft=op[2], with_deleted=with_deleted, qty=op[1])
        assert deleted == len(matching)
        for k in matching:
            if soft:
                model[k].deleted = True
            else:
                del model[k]
    elif not ids:
        return
    elif kind == "update":
        target = ids[op[1] % len(ids)]
        if model[target].deleted:
            try:
                await repo.update(target, qty=op[2])
            except NotFoundError:
                return
            raise AssertionError("update of a soft-deleted row must fail")
        await repo.update(target, qty=op[2])
        model[target].qty = op[2]
    elif kind == "delete":
        target = ids[op[1] % len(ids)]
        soft = op[2] is not False
        if soft and model[target].deleted:
            try:
                await repo.delete(target, soft=op[2])
            except NotFoundError:
                return
            raise AssertionError("soft delete of a deleted row must fail")
        await repo.delete(target, soft=op[2])
        if soft:
            model[target].deleted = True
        else:
            del model[target]
    elif kind == "restore":
        target = ids[op[1] % len(ids)]
        if not model[target].deleted:
            try:
                await repo.restore(target)
            except ValidationError:
                return
            raise AssertionError("restore of a live row must fail")
        await repo.restore(target)
        model[target].deleted = False
    elif kind == "bulk_update":
        wanted = {ids[p % len(ids)]: q for p, q in op[1]}
        if any(model[i].deleted for i in wanted):
            try:
                await repo.bulk_update([{"id": i, "qty": q} for i, q in wanted.items()])
            except NotFoundError:
                return
            raise AssertionError("bulk_update touching a deleted row must fail")
        await repo.bulk_update([{"id": i, "qty": q} for i, q in wanted.items()])
        for i, q in wanted.items():
            model[i].qty = q
    elif kind == "bulk_delete":
        targets = sorted({ids[p % len(ids)] for p in op[1]})
        soft = op[2] is not False
        expected = sum(1 for t in targets if not (soft and model[t].deleted))
        assert await repo.bulk_delete(targets, soft=op[2]) == expected
        for t in targets:
            if soft:
                model[t].deleted = True
            else:
                del model[t]


async def check(repo: Repository[Item], model: dict[int, Row]) -> None:
    everything = {
        i.id: (i.name, i.qty, i.deleted_at is not None)
        for i in await repo.get_all(with_deleted=True)
    }
    assert everything == {k: (r.name, r.qty, r.deleted) for k, r in model.items()}
    live = {i.id for i in await repo.get_all()}
    assert live == {k for k, r in model.items() if not r.deleted}
    assert await repo.count() == len(live)
    assert await repo.count(with_deleted=True) == len(model)


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(ops, min_size=1, max_size=12))
async def test_repository_matches_a_model(
    db: AsyncDatabaseManager, sequence: list[tuple[Any, ...]]
) -> None:
    async with db.session() as session:
        await session.execute(delete(Item))
        await session.commit()
    repo = Repository(Item, db)
    model: dict[int, Row] = {}
    for op in sequence:
        await apply(repo, model, op)
        await check(repo, model)
