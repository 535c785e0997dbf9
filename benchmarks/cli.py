"""Command line of the benchmark suite: ``python -m benchmarks --smoke|--full``."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import (
    batch,
    cold_start,
    machine,
    scoring,
    size,
    throughput,
    training_run,
    warm,
)
from benchmarks.measure import Figure
from benchmarks.report import render_header, render_table, write_results
from benchmarks.workspace import FULL, SMOKE, Mode, Workspace, prepare

logger = logging.getLogger("benchmarks")

DEFAULT_OUT = Path("bench/results/results.json")
DEFAULT_DATABASE_URL = "postgresql+pg8000://postgres@127.0.0.1:5432/test"

GROUPS: dict[str, Callable[[Workspace], list[Figure]]] = {
    "scoring": scoring.run,
    "warm": warm.run,
    "batch": batch.run,
    "cold-start": cold_start.run,
    "size": size.run,
    "throughput": throughput.run,
    "training": training_run.run,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the fraud-scoring service against the usual scikit-learn "
        "approach on the same data, and print one table.",
    )
    kind = parser.add_mutually_exclusive_group(required=True)
    kind.add_argument("--smoke", action="store_true",
                      help="short run for CI: few repetitions, 7 training days, never "
                      "fails on slowness")
    kind.add_argument("--full", action="store_true",
                      help="the published run: many repetitions, training on all the data")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"JSON results file; a Markdown table is written beside it "
                        f"(default: {DEFAULT_OUT})")
    parser.add_argument("--data", default=os.environ.get("FRAUD_REFERENCE_DATA") or None,
                        help="reference transactions (Parquet); default $FRAUD_REFERENCE_DATA, "
                        "else simulated with training.simulate")
    parser.add_argument("--bundle", type=Path,
                        help="reuse this bundle directory instead of training one")
    parser.add_argument("--database-url",
                        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
                        help="PostgreSQL server URL; a fresh database is created on it and "
                        "dropped afterwards (default: $BENCH_DATABASE_URL or "
                        f"{DEFAULT_DATABASE_URL})")
    parser.add_argument("--only", nargs="+", choices=list(GROUPS), metavar="GROUP",
                        help=f"run only these figure groups: {', '.join(GROUPS)}")
    parser.add_argument("--concurrency", nargs="+", type=_positive_int, metavar="N",
                        help="server throughput: connections per load level (default: "
                        f"{' '.join(map(str, FULL.server_concurrency))})")
    parser.add_argument("--rounds", type=_positive_int, metavar="N",
                        help="server throughput: rounds of both servers (default: "
                        f"{SMOKE.server_rounds} smoke, {FULL.server_rounds} full)")
    return parser


def run_mode(args: argparse.Namespace) -> Mode:
    """Return the smoke or full sizes, with the server options of ``args`` applied."""
    mode = SMOKE if args.smoke else FULL
    if args.concurrency:
        mode = replace(mode, server_concurrency=tuple(dict.fromkeys(args.concurrency)))
    if args.rounds:
        mode = replace(mode, server_rounds=args.rounds)
    return mode


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; return 0, or 1 when a figure group failed (its error is reported)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.concurrency or args.rounds) and args.only and "throughput" not in args.only:
        parser.error("--concurrency and --rounds set the throughput group, which --only leaves out")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mode = run_mode(args)
    command = shlex.join([Path(sys.executable).name, "-m", "benchmarks",
                          *(sys.argv[1:] if argv is None else argv)])
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    interpreter_ms = machine.interpreter_speed_ms()
    figures: list[Figure] = []
    errors: list[str] = []

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fraudbench-")))
        workspace = prepare(mode=mode, work=work, data=args.data, bundle_dir=args.bundle,
                            database_url=args.database_url, stack=stack)
        # The benchmark holds data and models that a serving process would not; moving
        # them out of the garbage collector's reach keeps its pauses close to a server's.
        gc.collect()
        gc.freeze()
        for name in args.only or list(GROUPS):
            logger.info("figure group %s: started", name)
            try:
                figures.extend(GROUPS[name](workspace))
            except Exception as exc:  # reported in the table and the exit code
                logger.exception("figure group %s failed", name)
                errors.append(f"{name}: {type(exc).__name__}: {exc}"[:500])
            logger.info("figure group %s: done", name)

        meta = {
            "command": command,
            "mode": mode.name,
            "started_at": started_at.isoformat(timespec="seconds"),
            "duration_seconds": time.perf_counter() - started,
            "machine": {**machine.describe(), "interpreter_speed_ms": interpreter_ms},
            "postgres": workspace.postgres_version,
            "data": workspace.data_source,
            "bundle": f"{workspace.bundle.version} ({workspace.bundle_dir})"
            if args.bundle else f"{workspace.bundle.version} (trained in this run)",
            # Other processes on the machine inflate the figures; a load average above
            # zero at the start shows that something else was running.
            "load_average": {"start": load_at_start, "end": os.getloadavg()},
            "notes": workspace.notes,
            "errors": errors,
        }
    markdown = write_results(args.out, meta, figures)
    print(render_header(meta))
    print()
    print(render_table(figures))
    print(f"\nResults: {args.out} and {markdown}")
    return 1 if errors else 0
