"""Inputs shared by the benchmark groups: data, a bundle, the reference models, request rows."""

from __future__ import annotations

import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import create_engine

from benchmarks.postgres import server_version, temporary_database
from benchmarks.reference import (
    ReferenceModel,
    create_reference_schema,
    fit_reference,
    load_reference,
    save_reference,
)
from fraudscore.audit import create_schema
from fraudscore.bundle import Bundle, load_bundle
from fraudscore.storage import open_store

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DATETIME = "TX_DATETIME"
TIME_BINARY = Path("/usr/bin/time")


@dataclass(frozen=True)
class Mode:
    """Sizes of one kind of run: ``smoke`` for CI, ``full`` for the published table."""

    name: str
    scoring_runs: int
    reference_scoring_runs: int
    handler_runs: int
    reference_handler_runs: int
    database_runs: int
    cold_runs: int
    server_requests: int
    # Seconds per load level when wrk drives the server (httpx sends server_requests).
    server_seconds: float
    # Rounds of (service, reference) servers; each figure is the median over rounds.
    server_rounds: int
    batch_sizes: tuple[int, ...]
    batch_repeats: int
    sample_rows: int
    # Days of training history; None trains on all of it, as `python -m training train` does.
    train_days: int | None
    # Connections kept busy, one load level each, in every server round.
    server_concurrency: tuple[int, ...] = (1, 16, 64)


SMOKE = Mode("smoke", scoring_runs=2_000, reference_scoring_runs=200, handler_runs=200,
             reference_handler_runs=100, database_runs=100, cold_runs=1, server_requests=64,
             server_seconds=2.0, server_rounds=1, batch_sizes=(1_000,), batch_repeats=2,
             sample_rows=2_000,
             train_days=7)
FULL = Mode("full", scoring_runs=100_000, reference_scoring_runs=5_000, handler_runs=5_000,
            reference_handler_runs=2_000, database_runs=2_000, cold_runs=11, server_requests=3_000,
            server_seconds=10.0, server_rounds=3, batch_sizes=(1_000, 10_000), batch_repeats=5,
            sample_rows=20_000, train_days=None)


@dataclass
class TrainingRun:
    """Wall time and peak memory of one ``python -m training train`` child process."""

    command: list[str]
    wall_seconds: float
    peak_rss_mib: float
    time_verbose: dict[str, str]
    phase_seconds: dict[str, float]


@dataclass
class Workspace:
    """Shared inputs of the benchmark groups, built once per run by :func:`prepare`."""

    mode: Mode
    work: Path
    data_path: Path
    data_source: str
    bundle_dir: Path
    bundle: Bundle
    reference_path: Path
    reference: ReferenceModel
    reference_fit_seconds: float
    sample: list[dict[str, float]]
    examples: dict[str, dict[str, float]]
    training: TrainingRun | None
    database_url: str | None
    postgres_version: str | None
    notes: list[str] = field(default_factory=list)
    # Work shared between groups, such as the deployment copies, keyed by name.
    cache: dict[str, Any] = field(default_factory=dict)

    def audit_targets(self, sqlite_name: str) -> list[tuple[str, str | None]]:
        """Return the audit settings a group compares, as (label, database URL or None).

        Audit off, a SQLite file named ``sqlite_name`` in the work directory (both apps'
        tables created), and the run's PostgreSQL database when the server is reachable.
        """
        sqlite_url = f"sqlite:///{self.work / sqlite_name}"
        create_audit_tables(sqlite_url)
        targets: list[tuple[str, str | None]] = [("audit off", None),
                                                 ("SQLite audit", sqlite_url)]
        if self.database_url:
            targets.append(("PostgreSQL audit", self.database_url))
        return targets


def create_audit_tables(url: str) -> None:
    """Create the service's and the reference's audit tables in the database at ``url``."""
    create_schema(url)
    engine = create_engine(url)
    create_reference_schema(engine)
    engine.dispose()


def prepare(
    *,
    mode: Mode,
    work: Path,
    data: str | None,
    bundle_dir: Path | None,
    database_url: str,
    stack: ExitStack,
) -> Workspace:
    """Resolve the data, train or load the bundle, fit the reference, open the database."""
    notes: list[str] = []
    data_path, data_source = _resolve_data(data, work)
    training = None
    if bundle_dir is None:
        bundle_dir = work / "bundle"
        training = train_bundle(data_path, bundle_dir, mode.train_days)
    else:
        notes.append(f"bundle reused from {bundle_dir}; training figures not measured")
    bundle = load_bundle(open_store(str(bundle_dir)))
    manifest = bundle.manifest

    label = manifest["training_data"]["label"]
    frame = pd.read_parquet(data_path, columns=[*bundle.schema.names, label, DATETIME])
    train = _period(frame, manifest, "train")
    expected_rows = manifest["training_data"]["splits"].get("rows", {}).get("train")
    if expected_rows is not None and expected_rows != len(train):
        notes.append(f"reference fitted on {len(train)} rows, but the bundle's training "
                     f"period had {expected_rows}: the bundle may come from other data")

    logger.info("fitting the reference models on %d rows", len(train))
    started = time.perf_counter()
    fitted = fit_reference(train, label, manifest)
    fit_seconds = time.perf_counter() - started
    reference_path = work / "reference.joblib"
    save_reference(fitted, reference_path)
    reference = load_reference(reference_path)

    test = _period(frame, manifest, "test")
    sample_frame = test.sample(min(mode.sample_rows, len(test)), random_state=0)
    sample = sample_frame[list(bundle.schema.names)].to_dict("records")
    examples = dict(manifest.get("example_transactions", {}))
    del frame, train, test

    url, version = _open_database(database_url, stack, notes)
    return Workspace(
        mode=mode, work=work, data_path=data_path, data_source=data_source,
        bundle_dir=bundle_dir, bundle=bundle, reference_path=reference_path,
        reference=reference, reference_fit_seconds=fit_seconds, sample=sample,
        examples=examples, training=training, database_url=url, postgres_version=version,
        notes=notes,
    )


def _resolve_data(data: str | None, work: Path) -> tuple[Path, str]:
    if data:
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"--data {data}: file not found")
        return path, f"{path} (Parquet)"

    from training.simulate import simulate

    logger.info("no --data and no FRAUD_REFERENCE_DATA: simulating transactions")
    path = work / "simulated.parquet"
    simulate().to_parquet(path)
    return path, "simulated by training.simulate.simulate() with its defaults"


def _period(frame: pd.DataFrame, manifest: dict[str, Any], name: str) -> pd.DataFrame:
    """Rows of the bundle's ``train`` or ``test`` period, by the dates in its manifest."""
    splits = manifest["training_data"]["splits"]
    if splits.get("method") != "time":
        return frame
    first, last = (pd.Timestamp(day) for day in splits[name])
    day = frame[DATETIME].dt.normalize()
    return frame[(day >= first) & (day <= last)]


def _open_database(url: str, stack: ExitStack, notes: list[str]) -> tuple[str | None, str | None]:
    version = server_version(url)
    if version is None:
        notes.append("PostgreSQL not reachable: PostgreSQL figures skipped")
        return None, None
    database = stack.enter_context(temporary_database(url))
    create_audit_tables(database)
    return database, version


def train_bundle(data_path: Path, out: Path, train_days: int | None) -> TrainingRun:
    """Run the training job in a child process and measure its wall time and peak memory."""
    command = [sys.executable, "-m", "training", "--log-level", "WARNING", "train",
               "--data", str(data_path), "--out", str(out), "--no-progress"]
    if train_days:
        command += ["--train-days", str(train_days)]
    wrapped = [str(TIME_BINARY), "-v", *command] if TIME_BINARY.exists() else command
    logger.info("training: %s", " ".join(command))

    started = time.perf_counter()
    result = subprocess.run(wrapped, cwd=ROOT, capture_output=True, text=True, check=False,  # noqa: S603
                            env={**os.environ, "PYTHONPATH": _pythonpath()})
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"training failed with exit code {result.returncode}:\n"
                           f"{result.stderr[-3000:]}")

    # Linux reports ru_maxrss in KiB: the largest resident set of any waited-for child.
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    verbose = _parse_time_verbose(result.stderr)
    if "Maximum resident set size (kbytes)" in verbose:
        peak_kib = int(verbose["Maximum resident set size (kbytes)"])
    manifest = load_bundle(open_store(str(out))).manifest
    return TrainingRun(command=command, wall_seconds=wall, peak_rss_mib=peak_kib / 1024,
                       time_verbose=verbose,
                       phase_seconds=dict(manifest.get("metrics", {}).get("phase_seconds", {})))


def _pythonpath() -> str:
    paths = [str(ROOT), str(ROOT / "layers" / "shared")]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(paths)


def _parse_time_verbose(stderr: str) -> dict[str, str]:
    """Read the ``name: value`` lines that GNU ``time -v`` appends to stderr."""
    fields = {}
    for line in stderr.splitlines():
        match = re.match(r"^\t(.+?): (.*)$", line)
        if match:
            fields[match.group(1)] = match.group(2)
    return fields


def copy_tree(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` without __pycache__, hard-linking files where possible."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, symlinks=True, copy_function=link_or_copy,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
