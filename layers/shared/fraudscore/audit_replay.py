"""Replay audit records from the local spool file into the database.

``python -m fraudscore.audit_replay [--spool PATH] [--database-url URL]``. The spool is
renamed before it is read, so the service keeps appending to a new file meanwhile.
Records already in the database are skipped by their decision id, so running the
replay twice, or after a crash half way, never duplicates a row.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fraudscore.audit import AuditRecord, AuditStore
from fraudscore.audit_fallback import is_current
from fraudscore.database import open_audit_database
from fraudscore.exceptions import AuditError, ConfigurationError
from fraudscore.settings import Settings

logger = logging.getLogger(__name__)

REPLAY_CHUNK = 500


def replay_spool(spool: Path, store: AuditStore) -> ReplayResult:
    """Write every record of ``spool`` (and of earlier interrupted replays) to ``store``.

    A file is deleted only after all its records were written; on a database error it
    stays for the next run. Lines that are not a valid record (a line cut short by a
    crash, say) are appended to ``<spool>.unreadable`` for inspection, and the other
    records are replayed.
    """
    with _replay_lock(spool):
        return _replay_locked(spool, store)


def _replay_locked(spool: Path, store: AuditStore) -> ReplayResult:
    claimed = _claim(spool)
    result = ReplayResult()
    for path in sorted(spool.parent.glob(f"{spool.name}.replaying-*")):
        records, unreadable = _read(path)
        if unreadable:
            _quarantine(spool.with_name(f"{spool.name}.unreadable"), unreadable)
        for start in range(0, len(records), REPLAY_CHUNK):
            store.write(records[start:start + REPLAY_CHUNK], keep_conflicts=True)
        path.unlink()
        result.replayed += len(records)
        result.unreadable += len(unreadable)
        logger.info("replayed %d audit record(s) from %s", len(records), path)
    if claimed is None and result.replayed == 0 and result.unreadable == 0:
        logger.info("audit spool %s is empty", spool)
    return result


@dataclass
class ReplayResult:
    """Records written to the database, and unreadable lines set aside."""

    replayed: int = 0
    unreadable: int = 0


@contextmanager
def _replay_lock(spool: Path) -> Iterator[None]:
    """Hold ``<spool>.replay-lock``, so that two replays never read the same files."""
    descriptor = os.open(spool.with_name(f"{spool.name}.replay-lock"),
                         os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _claim(spool: Path) -> Path | None:
    """Rename the spool under the writers' lock; return the new name, None if none."""
    target = spool.with_name(f"{spool.name}.replaying-{time.time_ns()}")
    while True:
        try:
            descriptor = os.open(spool, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            # Writers append under this lock. Once the rename is done under it, a writer
            # that waited for it finds that its file was renamed and opens the path again.
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            if is_current(descriptor, spool):
                os.replace(spool, target)
                return target
        finally:
            os.close(descriptor)


def _read(path: Path) -> tuple[list[AuditRecord], list[str]]:
    records: list[AuditRecord] = []
    unreadable: list[str] = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(AuditRecord.from_json(line))
            except (ValueError, TypeError, KeyError) as exc:
                # A spool write that fails is truncated away, so a line cut short comes
                # from a process that died before fsync returned: its decision was never
                # returned to a caller.
                logger.error("unreadable audit record at %s:%d: %s", path, number, exc)
                unreadable.append(line if line.endswith("\n") else line + "\n")
    return records, unreadable


def _quarantine(path: Path, lines: list[str]) -> None:
    # Owner-only, like the spool: the lines hold transactions' features.
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        handle.writelines(lines)
        handle.flush()
        os.fsync(handle.fileno())
    logger.error("kept %d unreadable spool line(s) in %s", len(lines), path)


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
    try:
        store = AuditStore(open_audit_database(settings))
        try:
            result = replay_spool(Path(args.spool or settings.audit_spool_path), store)
        finally:
            store.close()
    except (ConfigurationError, AuditError) as exc:
        # The spool files stay in place for the next run.
        logger.error("replay stopped: %s", exc)
        return 2
    logger.info("replay finished: %d record(s) written, %d unreadable line(s) set aside",
                result.replayed, result.unreadable)
    return 1 if result.unreadable else 0


if __name__ == "__main__":
    raise SystemExit(main())
