"""Replay audit records from the local spool file into the database.

``python -m fraudscore.audit_replay [--spool PATH] [--database-url URL]``. The spool is
renamed before it is read, so the service keeps appending to a new file meanwhile.
Records already in the database are skipped by their decision id, so running the
replay twice, or after a crash half way, never duplicates a row.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from fraudscore.audit import AuditRecord, AuditStore
from fraudscore.database import open_audit_database
from fraudscore.settings import Settings

logger = logging.getLogger(__name__)

REPLAY_CHUNK = 500


class SpoolFormatError(ValueError):
    """A spool line other than the last cannot be parsed; the file is kept for inspection."""


def replay_spool(spool: Path, store: AuditStore) -> int:
    """Write every record of ``spool`` (and of earlier interrupted replays) to ``store``.

    Returns the number of records read. A file is deleted only after all its records
    were written; on an error it stays for the next run.
    """
    claimed = _claim(spool)
    total = 0
    for path in sorted(spool.parent.glob(f"{spool.name}.replaying-*")):
        records = _read(path)
        for start in range(0, len(records), REPLAY_CHUNK):
            store.write(records[start:start + REPLAY_CHUNK], keep_conflicts=True)
        path.unlink()
        total += len(records)
        logger.info("replayed %d audit record(s) from %s", len(records), path)
    if claimed is None and total == 0:
        logger.info("audit spool %s is empty", spool)
    return total


def _claim(spool: Path) -> Path | None:
    target = spool.with_name(f"{spool.name}.replaying-{time.time_ns()}")
    try:
        os.replace(spool, target)
    except FileNotFoundError:
        return None
    return target


def _read(path: Path) -> list[AuditRecord]:
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(AuditRecord.from_json(line))
        except (ValueError, TypeError, KeyError) as exc:
            if number < len(lines):
                raise SpoolFormatError(f"{path}:{number}: unreadable audit record: {exc}") from exc
            # A torn last line means the process died during the write, before fsync
            # returned, so that decision was never returned to a caller.
            logger.error("skipping torn last spool line %s:%d: %s", path, number, exc)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    """Replay the spool configured by ``AUDIT_SPOOL_PATH``/``DATABASE_URL`` or the options."""
    parser = argparse.ArgumentParser(
        prog="python -m fraudscore.audit_replay",
        description="Write audit records from the local spool file to the audit database.",
    )
    parser.add_argument("--spool", help="spool file (default: $AUDIT_SPOOL_PATH)")
    parser.add_argument("--database-url", help="database URL, postgresql://... or "
                        "sqlite:///... (default: $DATABASE_URL)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    overrides = {"database_url": args.database_url} if args.database_url else {}
    settings = Settings.from_env(**overrides)
    store = AuditStore(open_audit_database(settings))
    try:
        count = replay_spool(Path(args.spool or settings.audit_spool_path), store)
    finally:
        store.close()
    logger.info("replay finished: %d record(s)", count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
