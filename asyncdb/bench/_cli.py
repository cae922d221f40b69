"""``asyncdb bench``: the command line of the benchmark."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from sqlalchemy.exc import SQLAlchemyError

from .._cli_common import EXIT_ERROR, EXIT_FAILED, EXIT_OK, add_url_argument
from .._errors import AsyncDBError
from .._settings import mask_url
from .._translate import translate
from ._report import check_targets, to_json, to_text
from ._runner import BenchFailedError, run_bench
from ._workloads import FULL, QUICK, WORKLOADS

__all__ = ["configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the bench command's arguments."""
    add_url_argument(parser)
    parser.add_argument(
        "--rounds", type=_positive_int, default=3, help="rounds to take the median of (default 3)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON only")
    parser.add_argument(
        "--quick", action="store_true", help="tiny workloads and short measurements (smoke test)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"seconds per measurement (default {FULL.duration:g}; --quick: {QUICK.duration:g})",
    )
    parser.add_argument(
        "--workloads",
        default=None,
        metavar="NAMES",
        help=f"comma-separated subset of: {', '.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="run even though the database already holds tables of its own",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a target that applies to this backend is missed (for CI)",
    )


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        msg = "must be at least 1"
        raise argparse.ArgumentTypeError(msg)
    return value


def _command(args: argparse.Namespace) -> str:
    parts = ["asyncdb bench"]
    if args.url:
        parts.append(f"--url {mask_url(args.url)}")
    parts.append(f"--rounds {args.rounds}")
    for flag in ("quick", "json", "yes", "check"):
        if getattr(args, flag):
            parts.append(f"--{flag}")
    if args.duration is not None:
        parts.append(f"--duration {args.duration:g}")
    if args.workloads:
        parts.append(f"--workloads {args.workloads}")
    return " ".join(parts)


async def run(args: argparse.Namespace) -> int:
    """Run the bench; exit 0 when it ran, 1 with ``--check`` when a target was missed."""
    if args.check and args.quick:
        print(
            "asyncdb bench: --check judges the targets, which a --quick smoke run does not "
            "measure. Drop --quick, or drop --check.",
            file=sys.stderr,
        )
        return EXIT_ERROR
    scale = QUICK if args.quick else FULL
    if args.duration is not None:
        scale = dataclasses.replace(scale, duration=max(args.duration, 0.001))
    only = [w.strip() for w in args.workloads.split(",") if w.strip()] if args.workloads else None
    try:
        result = await run_bench(
            args.url, rounds=args.rounds, scale=scale, only=only, yes=args.yes, progress=sys.stderr
        )
    except BenchFailedError as exc:
        print(f"asyncdb bench: {exc} (its tables were dropped)", file=sys.stderr)
        return EXIT_FAILED
    except (SQLAlchemyError, OSError) as exc:
        mapped = translate(exc)
        reason = str(mapped) if isinstance(mapped, AsyncDBError) else type(exc).__name__
        print(f"asyncdb bench: {reason}", file=sys.stderr)
        return EXIT_ERROR
    command = _command(args)
    verdicts = not args.quick
    if args.json:
        print(json.dumps(to_json(result, command, verdicts=verdicts), indent=2))
    else:
        print(to_text(result, command, verdicts=verdicts))
    if args.check and result.backend == "postgresql":
        missed = [t.name for t in check_targets(result) if t.met is False]
        if missed:
            print(f"asyncdb bench: target(s) missed: {'; '.join(missed)}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK
