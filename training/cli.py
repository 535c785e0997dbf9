"""Command line of the training job: ``python -m training <command> --help``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from fraudscore.exceptions import FraudScoreError
from training import columns

logger = logging.getLogger("training")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; return the process exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, FraudScoreError) as exc:
        logger.error("%s", exc)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Simulate or ingest transaction history, train the two-stage fraud "
        "model, and publish model bundles.",
    )
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_simulate(commands)
    _add_ingest(commands)
    _add_train(commands)
    _add_publish(commands)
    _add_verify(commands)
    return parser


def _add_simulate(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "simulate",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="write a deterministic simulated transaction history",
        description="Write simulated card transactions with the reference data set's columns "
        "(customers, terminals, several fraud patterns, about 1 % fraud).",
    )
    command.add_argument("--out", required=True, type=Path, help="output .parquet or .csv file")
    command.add_argument("--customers", type=int, default=2000, help="number of customers")
    command.add_argument("--terminals", type=int, default=4000, help="number of terminals")
    command.add_argument("--days", type=int, default=90, help="number of days simulated")
    command.add_argument("--start-date", default="2025-01-01", help="first day (YYYY-MM-DD)")
    command.add_argument("--seed", type=int, default=42, help="random seed")
    command.set_defaults(run=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from training.simulate import simulate, write_transactions

    if args.out.suffix.lower() not in {".parquet", ".csv"}:
        raise ValueError(f"--out must end in .parquet or .csv, got {args.out}")
    for option, value in (("--customers", args.customers), ("--terminals", args.terminals),
                          ("--days", args.days)):
        if value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")

    frame = simulate(n_customers=args.customers, n_terminals=args.terminals,
                     n_days=args.days, start_date=args.start_date, seed=args.seed)
    write_transactions(frame, args.out)
    logger.info("wrote %d transactions (%.2f%% fraud) to %s",
                len(frame), 100 * frame[columns.LABEL].mean(), args.out)
    return 0


def _add_ingest(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "ingest",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="load a Parquet or CSV file into a PostgreSQL table",
        description="Load transactions into PostgreSQL in chunks. Rows whose TRANSACTION_ID "
        "is already in the table are skipped, so a re-run inserts nothing twice.",
    )
    command.add_argument("--data", required=True, type=Path, help=".parquet or .csv file")
    command.add_argument("--db", default=os.environ.get("TRAINING_DATABASE_URL"),
                         help="SQLAlchemy URL, e.g. postgresql+pg8000://user@host/db "
                         "(default: $TRAINING_DATABASE_URL)")
    command.add_argument("--table", default="transactions", help="table name")
    command.add_argument("--chunk-size", type=int, default=50_000, help="rows per insert chunk")
    command.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    command.set_defaults(run=_run_ingest)


def _run_ingest(args: argparse.Namespace) -> int:
    from training.ingest import ingest_file

    if not args.db:
        raise ValueError("--db (or TRAINING_DATABASE_URL) is required")
    inserted = ingest_file(args.data, args.db, table=args.table, chunk_size=args.chunk_size,
                           progress=not args.no_progress)
    logger.info("inserted %d new rows into %s", inserted, args.table)
    return 0


def _add_train(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "train",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="train both stages and write a model bundle",
        description="Train stage 1 (logistic regression) and stage 2 (XGBoost), choose the "
        "uncertainty band on the validation period, evaluate on the test period and write a "
        "model bundle with a report.",
    )
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="history as a .parquet or .csv file, local or s3://")
    source.add_argument("--db", help="history in PostgreSQL: SQLAlchemy URL (with --table)")
    command.add_argument("--table", default="transactions", help="table name with --db")
    command.add_argument("--out", required=True, type=Path, help="bundle output directory")
    command.add_argument("--features", nargs="+", default=list(columns.DEFAULT_FEATURES),
                         help="feature columns (default: the 15 reference features)")
    command.add_argument("--label", default=columns.LABEL, help="label column (0/1)")
    command.add_argument("--test-days", type=int, default=7, help="days in the test period")
    command.add_argument("--validation-days", type=int, default=7,
                         help="days in the validation period")
    command.add_argument("--delay-days", type=int, default=7,
                         help="days left out before validation and before test (label delay)")
    command.add_argument("--train-days", type=int, default=None,
                         help="days of training history (default: all before the delay)")
    command.add_argument("--train-start", default=None, help="first training day (YYYY-MM-DD)")
    command.add_argument("--test-start", default=None,
                         help="first test day (default: the last --test-days days of data)")
    command.add_argument("--max-escalation", type=float, default=0.10,
                         help="maximum share of transactions sent to stage 2 (0-1)")
    command.add_argument("--band", nargs=2, type=float, metavar=("LOW", "HIGH"),
                         help="force the uncertainty band instead of searching for it")
    command.add_argument("--keep-known-compromised", action="store_true",
                         help="evaluate on all test transactions, including those of cards "
                         "already known to be compromised")
    command.add_argument("--seed", type=int, default=42, help="random seed")
    command.add_argument("--publish-to", metavar="S3_URI",
                         help="after training, publish the bundle to s3://bucket/prefix and make "
                         "it the active version")
    command.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    command.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from training.pipeline import TrainConfig, train
    from training.splits import SplitConfig

    if not 0.0 <= args.max_escalation <= 1.0:
        raise ValueError(f"--max-escalation must be between 0 and 1, got {args.max_escalation}")
    if args.band and not 0.0 <= args.band[0] <= args.band[1] <= 1.0:
        raise ValueError(f"--band must satisfy 0 <= LOW <= HIGH <= 1, got {args.band}")
    config = TrainConfig(
        out_dir=args.out,
        features=tuple(args.features),
        label=args.label,
        splits=SplitConfig(
            test_days=args.test_days, validation_days=args.validation_days,
            delay_days=args.delay_days, train_days=args.train_days,
            test_start=args.test_start, train_start=args.train_start, seed=args.seed,
        ),
        max_escalation=args.max_escalation,
        band=tuple(args.band) if args.band else None,
        remove_known_compromised=not args.keep_known_compromised,
        seed=args.seed,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    with _local_copy(args.data) as data_path:
        out = train(config, data_path=data_path, database_url=args.db, table=args.table)
    logger.info("bundle written to %s (report: %s)", out, out / "report" / "report.md")
    if args.publish_to:
        from training.publish import publish_bundle

        logger.info("published %s", publish_bundle(out, args.publish_to))
    return 0


@contextmanager
def _local_copy(data: str | None) -> Iterator[Path | None]:
    """Yield a local path for ``data``, downloading an ``s3://`` object to a temp file."""
    if data is None or not data.startswith("s3://"):
        yield Path(data) if data else None
        return
    import boto3

    from fraudscore.storage import parse_s3_uri

    bucket, key = parse_s3_uri(data)
    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / Path(key).name
        logger.info("downloading %s", data)
        boto3.client("s3").download_file(bucket, key, str(target))
        yield target


def _add_publish(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "publish", help="upload a bundle to S3 and make it the active version",
        description="Upload every bundle file under <prefix>/versions/<bundle version>/, "
        "verify the upload, then rewrite <prefix>/ACTIVE.json to point at it.",
    )
    command.add_argument("--bundle", required=True, type=Path, help="local bundle directory")
    command.add_argument("--to", required=True, help="s3://bucket/prefix")
    command.add_argument("--no-activate", action="store_true",
                         help="upload only; leave ACTIVE.json unchanged")
    command.set_defaults(run=_run_publish)


def _run_publish(args: argparse.Namespace) -> int:
    from training.publish import publish_bundle

    uri = publish_bundle(args.bundle, args.to, activate=not args.no_activate)
    logger.info("published %s", uri)
    return 0


def _add_verify(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "verify", help="check a bundle's hashes and format version",
        description="Load a bundle the way the service does and report whether it is valid.",
    )
    command.add_argument("bundle", help="bundle directory or s3://bucket/prefix")
    command.set_defaults(run=_run_verify)


def _run_verify(args: argparse.Namespace) -> int:
    from fraudscore.bundle import load_bundle
    from fraudscore.exceptions import BundleError
    from fraudscore.storage import open_store

    try:
        bundle = load_bundle(open_store(args.bundle))
    except BundleError as exc:
        logger.error("invalid bundle: %s", exc)
        return 1
    logger.info("bundle %s is valid: %d features, band [%.5f, %.5f), threshold %.5f",
                bundle.version, len(bundle.schema), bundle.band.low, bundle.band.high,
                bundle.threshold)
    return 0
