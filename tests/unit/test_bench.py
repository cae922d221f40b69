"""The bench's pieces that need no database: safety heuristic, plan, report, progress."""

from __future__ import annotations

import datetime as dt
import io
import re
import tempfile
from pathlib import Path

import pytest

import asyncdb
from asyncdb import Base, ConfigurationError
from asyncdb.bench._progress import Progress
from asyncdb.bench._report import check_targets, medians, to_json, to_text
from asyncdb.bench._runner import BenchResult, plan
from asyncdb.bench._schema import PREFIX, is_scratch_sqlite, make_schema
from asyncdb.bench._workloads import QUICK, Sample


def test_scratch_sqlite_is_the_temp_dir_or_the_default_file() -> None:
    temp = Path(tempfile.gettempdir()) / "x" / "bench.db"
    assert is_scratch_sqlite(f"sqlite+aiosqlite:///{temp}")
    assert is_scratch_sqlite("sqlite+aiosqlite:///./asyncdb.sqlite3")
    assert not is_scratch_sqlite("sqlite+aiosqlite:////srv/app/app.db")
    assert not is_scratch_sqlite("sqlite+aiosqlite:///:memory:")
    assert not is_scratch_sqlite("postgresql+asyncpg://u@localhost/scratch")


def test_schema_names_are_unique_and_kept_off_asyncdb_base() -> None:
    a, b = make_schema(), make_schema()
    assert a.name != b.name
    assert a.name.startswith(PREFIX) and a.write_name == f"{a.name}_w"
    assert a.name not in Base.metadata.tables
    assert set(a.base.metadata.tables) == set(a.table_names)
    with pytest.raises(ValueError, match="bench table names"):
        make_schema("users; drop table users")


def test_plan_skips_the_cache_stack_until_the_cache_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(asyncdb, "RepositoryCache", raising=False)
    workloads, skipped = plan("postgresql", None)
    assert "asyncdb+cache" in skipped and "does not exist" in skipped["asyncdb+cache"]
    assert all("asyncdb+cache" not in w.stacks for w in workloads)
    assert [w.name for w in workloads][-1] == "liveness"

    class FakeCache:
        def __init__(self, *, ttl: float, max_entries: int) -> None: ...

    monkeypatch.setattr(asyncdb, "RepositoryCache", FakeCache, raising=False)
    workloads, skipped = plan("sqlite", ["get_by_id", "liveness"])
    assert "asyncdb+cache" not in skipped
    assert [w.name for w in workloads] == ["get_by_id"]
    assert "asyncdb+cache" in workloads[0].stacks
    assert "liveness" in skipped  # PostgreSQL only


def test_plan_rejects_unknown_workloads() -> None:
    with pytest.raises(ConfigurationError, match="Unknown workload"):
        plan("sqlite", ["get_by_id", "nope"])


def _result(samples: dict[str, dict[str, list[float]]], backend: str = "postgresql") -> BenchResult:
    return BenchResult(
        url="postgresql+asyncpg://u@h/db",
        backend=backend,
        server="PostgreSQL 15",
        driver="asyncpg",
        scale=QUICK,
        rounds=3,
        table=f"{PREFIX}abc",
        started=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        seconds=12.0,
        samples={
            w: {s: [Sample(int(rate), 1.0) for rate in rates] for s, rates in stacks.items()}
            for w, stacks in samples.items()
        },
        skipped=["asyncdb+cache: skipped: not yet"],
    )


SAMPLES = {
    "create": {
        "orm": [100, 110, 90],
        "asyncdb": [120, 100, 110],
        "asyncdb-nometrics": [112, 112, 112],
        "asyncdb+audit": [70, 80, 75],
    },
    "get_by_id": {"orm": [100, 100, 100], "asyncdb": [90, 95, 99], "asyncdb-nometrics": [99]},
    "bulk_create": {"orm": [1000], "asyncdb": [5000], "asyncdb+audit": [2000]},
}


def test_medians_and_targets() -> None:
    result = _result(SAMPLES)
    assert medians(result)["create"] == {
        "orm": 100,
        "asyncdb": 110,
        "asyncdb-nometrics": 112,
        "asyncdb+audit": 75,
    }
    checks = {c.name: c for c in check_targets(result)}
    create = checks["create: asyncdb vs bare ORM"]
    assert create.met and create.measured == 1.2  # the median of 1.2, 0.91, 1.22
    assert (create.low, create.high, create.rounds) == (0.9091, 1.2222, "0.91x..1.22x")
    get = checks["get_by_id: asyncdb vs bare ORM"]  # issue 16 on PostgreSQL: 1.6x
    assert get.met is False and get.note == "missed by 41%" and get.wanted == "≥ 1.60x"
    assert checks["get_by_id: asyncdb vs raw asyncpg"].shown == "not run"
    assert checks["bulk_create: asyncdb vs SQLAlchemy Core"].shown == "not run"  # SQLite only
    elsewhere = {c.name: c for c in check_targets(_result(SAMPLES, backend="sqlite"))}
    get = elsewhere["get_by_id: asyncdb vs bare ORM"]
    assert get.met is False and get.note == "missed by 5%" and get.wanted == "> 1.00x"
    assert checks["bulk_create: asyncdb vs ORM add_all"].met  # 5.00x >= 4x
    audit = checks["create: cost of audit on vs off"]
    assert audit.met is False and audit.shown == "1.47x"  # 110 / 75
    assert checks["bulk_create: cost of audit on vs off"].shown == "2.50x"
    metrics = checks["create: metrics overhead"]
    assert metrics.met and metrics.shown == "+1.8%"
    assert checks["get_by_id: metrics overhead"].shown == "+10.0%"  # only round 1 pairs up
    assert checks["update: asyncdb vs bare ORM"].shown == "not run"


def test_text_and_json_reports() -> None:
    result = _result(SAMPLES)
    text = to_text(result, "asyncdb bench --rounds 3")
    assert "SQLAlchemy ORM (baseline)" in text and "1.10x" in text and "1.20x" in text
    assert "MISSED (missed by 41%)" in text and "Targets (set for PostgreSQL)" in text
    assert "note: asyncdb+cache: skipped: not yet" in text
    data = to_json(result, "asyncdb bench --rounds 3")
    create = data["workloads"][0]
    assert create["name"] == "create" and create["unit"] == "ops/s"
    assert create["results"]["asyncdb"] == {
        "label": "asyncdb (metrics on, audit off)",
        "median": 110.0,
        "ratio": 1.1,
        "spread": pytest.approx(0.0909, abs=1e-4),
        "samples": [120.0, 100.0, 110.0],
        "ops": [120, 100, 110],
    }
    assert data["targets_apply"] is True
    assert not to_json(_result(SAMPLES, backend="sqlite"), "x")["targets_apply"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_a_log_prints_a_line_per_tenth() -> None:
    stream = io.StringIO()
    progress = Progress(200, label="work", stream=stream)
    for done in range(1, 201):
        progress.update(done, "step")
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11  # the start, then every tenth
    assert lines[-1].startswith("work 100% (200/200")
    assert lines[-1].endswith(" s) step")
    assert re.search(r", \d+\.\d s\)", lines[-1])  # tenths under 10 s, never a flat "0 s"


def test_progress_on_a_terminal_redraws_one_line() -> None:
    stream = _Tty()
    progress = Progress(4, label="work", stream=stream)
    for done in range(1, 5):
        progress.update(done, "a long detail" if done == 1 else "x")
    progress.finish()
    out = stream.getvalue()
    assert "\n" not in out and out.count("\r") == 4 + 2
    assert "x            \r" in out  # a shorter line blanks what the longer one left
    assert out.endswith("\r")  # the line is cleared at the end


def test_a_smoke_run_report_has_no_verdicts() -> None:
    result = _result(SAMPLES)
    text = to_text(result, "asyncdb bench --quick", verdicts=False)
    assert "MISSED" not in text and "Targets (set for PostgreSQL)" not in text
    assert "not judged on a --quick smoke run" in text
    assert "note: asyncdb+cache: skipped: not yet" in text
    data = to_json(result, "asyncdb bench --quick", verdicts=False)
    assert data["targets"] == [] and data["targets_apply"] is False
