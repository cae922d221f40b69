"""Checking the audit log's hash chains: :func:`verify_audit_chain`.

The chains themselves (scope, order, what a hash covers) are described in
``_audit_chain``. Verification streams the log in chain order in constant memory, so a
table of millions of rows is checked without loading it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, and_, func, or_, select

from ._audit_chain import CHAIN_FIELDS, CHECKPOINT_ENTITY, chain_key, fields_digest, link_digest
from ._audit_model import AUDIT_TABLE, AuditAction, AuditLog
from ._filters import check_int
from ._translate import translate_errors

if TYPE_CHECKING:
    from ._manager import AsyncDatabaseManager

__all__ = ["AuditChainBreak", "AuditChainReport", "verify_audit_chain"]

_FETCH = 5000


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditChainBreak:
    """The first broken link found: which row, what was expected there, what was found.

    ``problem`` is ``"hash"`` (the row's content was changed), ``"link"`` (its
    ``prev_hash`` does not name the row before it: a row was deleted, inserted or moved),
    ``"sequence"`` (a gap or repeat in ``chain_seq``), ``"start"`` (a chain begins past
    ``chain_seq`` 1 without a checkpoint anchoring the removed rows) or ``"unchained"``
    (a row without chain fields written after chaining began).
    """

    row_id: int
    table_name: str
    entity_id: str | None
    chain_seq: int | None
    problem: str
    expected: str | None
    found: str | None

    def __str__(self) -> str:
        return (
            f"audit row {self.row_id} ({self.table_name}:{self.entity_id}, chain_seq "
            f"{self.chain_seq}) breaks the chain ({self.problem}): expected {self.expected}, "
            f"found {self.found}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuditChainReport:
    """What :func:`verify_audit_chain` checked, and the first broken link if any.

    ``head_digest`` is a sha256 over every checked chain's newest ``(chain_seq,
    row_hash)``: publish it with ``last_id`` outside the database (logs, metrics, a
    ticket) and a later ``verify_audit_chain(db, until_id=last_id)`` must reproduce it.
    """

    rows: int
    chains: int
    unchained: int
    checkpoints: int
    last_id: int | None
    head_digest: str
    broken: AuditChainBreak | None

    @property
    def ok(self) -> bool:
        """True when no link is broken."""
        return self.broken is None

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["ok"] = self.ok
        return data


class _Checker:
    """Walks rows in (chain, chain_seq) order; remembers the first break."""

    def __init__(self, anchors: dict[tuple[str, str | None], dict[int, str | None]]) -> None:
        self.anchors = anchors
        self.key: tuple[str, str | None] | None = None
        self.seq = 0
        self.hash: str | None = None
        self.rows = 0
        self.chains = 0
        self.last_id: int | None = None
        self.heads = hashlib.sha256()
        self.broken: AuditChainBreak | None = None

    def _break(self, row: Any, problem: str, expected: object, found: object) -> None:
        self.broken = AuditChainBreak(
            row_id=int(row.id),
            table_name=row.table_name,
            entity_id=row.entity_id,
            chain_seq=None if row.chain_seq is None else int(row.chain_seq),
            problem=problem,
            expected=None if expected is None else str(expected),
            found=None if found is None else str(found),
        )

    def _close_chain(self) -> None:
        if self.key is not None:
            table, entity = self.key
            self.heads.update(f"{table}\x1f{entity}\x1f{self.seq}\x1f{self.hash}\n".encode())

    def check(self, row: Any) -> bool:
        """Check one row; False once a break has been found."""
        self.rows += 1
        self.last_id = max(self.last_id or 0, int(row.id))
        key = chain_key(row.table_name, row.entity_id)
        if row.chain_seq is None or row.row_hash is None:
            self._break(row, "sequence", "chain_seq and row_hash", "NULL")
            return False
        seq = int(row.chain_seq)
        if key != self.key:
            self._close_chain()
            self.key = key
            self.chains += 1
            if seq == 1:
                expected_prev = None
            else:
                anchored = self.anchors.get(key, {})
                if seq - 1 not in anchored:
                    self._break(row, "start", "chain_seq 1 or a checkpoint", f"chain_seq {seq}")
                    return False
                expected_prev = anchored[seq - 1]
        else:
            if seq != self.seq + 1:
                self._break(row, "sequence", f"chain_seq {self.seq + 1}", f"chain_seq {seq}")
                return False
            expected_prev = self.hash
        if row.prev_hash != expected_prev:
            self._break(row, "link", expected_prev, row.prev_hash)
            return False
        digest = link_digest(row.prev_hash, seq, fields_digest(row[4:]))
        if digest != row.row_hash:
            self._break(row, "hash", digest, row.row_hash)
            return False
        self.seq = seq
        self.hash = row.row_hash
        return True


async def verify_audit_chain(
    db: AsyncDatabaseManager,
    *,
    table_name: str | None = None,
    entity_id: object = None,
    until_id: int | None = None,
) -> AuditChainReport:
    """Recompute the audit log's hash chains; report the first broken link.

    Narrow the check with ``table_name`` / ``entity_id``; ``until_id`` ignores rows
    written after a published anchor (see :class:`AuditChainReport`). Rows written before
    the chain existed (migration ``asyncdb_0002``) are counted as ``unchained``::

        report = await verify_audit_chain(db)
        if not report.ok:
            raise SystemExit(str(report.broken))
    """
    if until_id is not None:
        check_int("until_id", until_id, 0)
    audit: Table = AuditLog.__table__  # type: ignore[assignment]
    unchained_row = and_(
        audit.c.chain_seq.is_(None), audit.c.prev_hash.is_(None), audit.c.row_hash.is_(None)
    )
    scope = []
    if table_name is not None:
        scope.append(audit.c.table_name == table_name)
    if entity_id is not None:
        scope.append(audit.c.entity_id == str(entity_id))
    if until_id is not None:
        scope.append(audit.c.id <= until_id)
    columns = [audit.c.id, audit.c.chain_seq, audit.c.prev_hash, audit.c.row_hash]
    columns += [audit.c[name] for name in CHAIN_FIELDS]
    stmt = (
        select(*columns)
        .where(~unchained_row, *scope)
        .order_by(audit.c.table_name, audit.c.entity_id, audit.c.chain_seq, audit.c.id)
        .execution_options(yield_per=_FETCH)
    )
    with translate_errors():
        async with db.session(read_only=True) as session:
            anchors = await _anchors(session, audit, until_id)
            checker = _Checker(anchors)
            result = await session.stream(stmt)
            async for partition in result.partitions():
                if checker.broken is not None:
                    break
                for row in partition:
                    if not checker.check(row):
                        break
            await result.close()
            checker._close_chain()
            unchained, late = await _unchained(session, audit, unchained_row, scope)
    broken = checker.broken
    if broken is None and late is not None:
        broken = AuditChainBreak(
            row_id=int(late.id),
            table_name=late.table_name,
            entity_id=late.entity_id,
            chain_seq=None,
            problem="unchained",
            expected="a chained row (written after chaining began)",
            found="no chain fields",
        )
    return AuditChainReport(
        rows=checker.rows,
        chains=checker.chains,
        unchained=unchained,
        checkpoints=sum(len(a) for a in anchors.values()),
        last_id=checker.last_id,
        head_digest=checker.heads.hexdigest(),
        broken=broken,
    )


async def _anchors(
    session: Any, audit: Table, until_id: int | None
) -> dict[tuple[str, str | None], dict[int, str | None]]:
    """chain → {last removed chain_seq: its row_hash}, from every CHECKPOINT row."""
    stmt = select(audit.c.new_values).where(
        audit.c.table_name == AUDIT_TABLE,
        audit.c.entity_id == CHECKPOINT_ENTITY,
        audit.c.action == AuditAction.CHECKPOINT.value,
    )
    if until_id is not None:
        stmt = stmt.where(audit.c.id <= until_id)
    anchors: dict[tuple[str, str | None], dict[int, str | None]] = {}
    for (values,) in await session.execute(stmt):
        # A forged checkpoint must not stop the check: its own chain link will fail.
        entries = values.get("chains") if isinstance(values, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("seq"), int):
                key = chain_key(str(entry.get("table")), entry.get("entity_id"))
                anchors.setdefault(key, {})[entry["seq"]] = entry.get("hash")
    return anchors


async def _unchained(session: Any, audit: Table, unchained_row: Any, scope: list[Any]) -> Any:
    """How many unchained rows, and one written after the first chained row (if any)."""
    count = (
        await session.execute(select(func.count()).select_from(audit).where(unchained_row, *scope))
    ).scalar_one()
    if not count:
        return 0, None
    first_chained = select(func.min(audit.c.id)).where(
        or_(audit.c.chain_seq.is_not(None), audit.c.row_hash.is_not(None))
    )
    late = (
        await session.execute(
            select(audit.c.id, audit.c.table_name, audit.c.entity_id)
            .where(unchained_row, *scope, audit.c.id > first_chained.scalar_subquery())
            .order_by(audit.c.id)
            .limit(1)
        )
    ).first()
    return int(count), late
