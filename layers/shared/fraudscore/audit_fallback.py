"""Durable fallbacks for audit records that PostgreSQL did not accept.

A decision is returned only after its audit record is stored somewhere durable: in the
database, or else in a fallback from which :mod:`fraudscore.audit_replay` writes it to
the database later. In AWS the fallback is an SQS queue (with its own dead-letter
queue); locally it is an append-only JSON Lines spool file.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from fraudscore.audit import AuditRecord
from fraudscore.exceptions import AuditError

logger = logging.getLogger(__name__)

# SQS accepts at most 10 messages per SendMessageBatch call.
SQS_BATCH_LIMIT = 10

# Free space below which the spool counts as unusable: about 1,000 records of 1 kB.
SPOOL_MIN_FREE_BYTES = 1 << 20


class AuditFallback(Protocol):
    """Somewhere durable to keep audit records until they can be replayed."""

    name: str

    def write(self, records: Sequence[AuditRecord]) -> None:
        """Store ``records`` durably or raise AuditError."""
        ...


class SpoolFallback:
    """Appends records to a JSON Lines file, one ``fsync`` per write.

    Appends hold an exclusive ``flock`` on the file, so several worker processes can
    share one spool. Replay renames the file first; later appends start a new file.
    A write is all or nothing: an append that fails half way (a full disk) is truncated
    away and raises AuditError, and a line left unterminated by a crash is ended before
    the next append, so it cannot swallow a new record.
    """

    name = "spool"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, records: Sequence[AuditRecord]) -> None:
        payload = "".join(record.to_json() + "\n" for record in records).encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while not self._append(payload):
                pass  # a replay renamed the file while this write waited for the lock
        except OSError as exc:
            raise AuditError(f"audit spool {self.path} is not writable: {exc}") from exc
        logger.warning("spooled %d audit record(s) to %s", len(records), self.path)

    def _append(self, payload: bytes) -> bool:
        """Append under the lock; return False if the opened file is no longer the spool."""
        descriptor = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            if not is_current(descriptor, self.path):
                return False
            _append_all(descriptor, payload)
            return True
        finally:
            os.close(descriptor)

    def problem(self) -> str | None:
        """Return why an append would fail now, or None when the spool looks usable.

        It checks, without writing, that the spool is a regular file or can be created,
        that its folder (or the nearest folder that exists) is writable, and that the disk
        has ``SPOOL_MIN_FREE_BYTES`` free. A write can still fail after a None, for
        example when the disk fills up in between.
        """
        try:
            if self.path.exists() and not self.path.is_file():
                return f"audit spool {self.path} is not a regular file"
            folder = self.path.parent
            while not folder.exists():
                folder = folder.parent
            if not folder.is_dir():
                return f"audit spool folder {folder} is not a directory"

            target = self.path if self.path.exists() else folder
            if not os.access(target, os.W_OK):
                return f"audit spool {target} is not writable"
            stats = os.statvfs(folder)
        except OSError as exc:
            return f"audit spool {self.path} cannot be checked: {exc}"
        free = stats.f_bavail * stats.f_frsize
        if free < SPOOL_MIN_FREE_BYTES:
            return (f"audit spool disk has {free} bytes free, less than "
                    f"{SPOOL_MIN_FREE_BYTES}")
        return None

    def pending(self) -> int:
        """Number of records waiting: lines in the spool and in unfinished replays."""
        try:
            replaying = list(self.path.parent.glob(f"{self.path.name}.replaying-*"))
        except OSError:
            replaying = []  # the folder cannot be listed: problem() reports it
        files = [self.path, *replaying]
        total = 0
        for path in files:
            try:
                with path.open("rb") as handle:
                    total += sum(1 for line in handle if line.strip())
            except OSError:
                # Missing, or not a readable file: problem() reports the latter.
                continue
        return total


def is_current(descriptor: int, path: Path) -> bool:
    """True when ``descriptor`` is still the file at ``path`` (not renamed or replaced).

    Replay renames the spool while it holds the lock, so a writer that opened the file
    before the rename and got the lock after it must open the path again.
    """
    try:
        current = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (opened.st_dev, opened.st_ino) == (current.st_dev, current.st_ino)


def _append_all(descriptor: int, payload: bytes) -> None:
    """Append ``payload`` and fsync, or leave the file as it was and raise OSError."""
    end = os.lseek(descriptor, 0, os.SEEK_END)
    if end > 0 and os.pread(descriptor, 1, end - 1) != b"\n":
        # A process died in the middle of a line; end it, and replay reports it.
        payload = b"\n" + payload
    try:
        written = 0
        while written < len(payload):
            count = os.write(descriptor, payload[written:])
            if count == 0:
                raise OSError(errno.ENOSPC, "no bytes written")
            written += count
        os.fsync(descriptor)
    except OSError:
        os.ftruncate(descriptor, end)
        raise


class SqsFallback:
    """Sends records to an SQS queue; the replay function consumes it."""

    name = "sqs"

    def __init__(self, queue_url: str, client: Any = None) -> None:
        if client is None:
            from fraudscore.aws_clients import create_client

            client = create_client("sqs")
        self.queue_url = queue_url
        self.client = client

    def write(self, records: Sequence[AuditRecord]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        for chunk in _chunks(records, SQS_BATCH_LIMIT):
            entries = [{"Id": str(i), "MessageBody": record.to_json()}
                       for i, record in enumerate(chunk)]
            try:
                response = self.client.send_message_batch(QueueUrl=self.queue_url,
                                                          Entries=entries)
            except (BotoCoreError, ClientError) as exc:
                raise AuditError(f"audit fallback queue send failed: {exc}") from exc
            failed = response.get("Failed") or []
            if failed:
                ids = ", ".join(chunk[int(entry["Id"])].decision_id for entry in failed)
                raise AuditError(f"audit fallback queue rejected decision ids {ids}")
        logger.warning("sent %d audit record(s) to the fallback queue", len(records))


def _chunks(records: Sequence[AuditRecord], size: int) -> Iterator[Sequence[AuditRecord]]:
    for start in range(0, len(records), size):
        yield records[start:start + size]
