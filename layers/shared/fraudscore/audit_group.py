"""Group commit: the audit records of concurrent requests go out in one INSERT.

Under uvicorn, one worker's event loop serves many requests at once. If each request
sent its own INSERT, each would wait for its own commit (a WAL flush) with the event loop
blocked. :class:`AuditGroupWriter` instead queues the record of each single-decision
request and, one turn of the event loop later, writes every queued record with one
statement (:meth:`AuditStore.write_each`): one round trip and one commit for the group.
Each request then resumes with its own outcome, as if it had written alone.

Under Mangum a Lambda container serves one request at a time, so each group contains one
record and the statement is the one a direct write sends.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from fraudscore.audit import INSERT_CHUNK, AuditRecord, AuditStore
from fraudscore.connection_pool import PoolTimeoutError
from fraudscore.exceptions import AuditError, DatabaseError

logger = logging.getLogger(__name__)

type _Queued = tuple[AuditRecord, asyncio.Future[dict[str, AuditRecord]]]
type _Outcome = dict[str, AuditRecord] | BaseException


class AuditGroupWriter:
    """Writes the records queued on an event loop during one of its turns together.

    Parameters
    ----------
    store : AuditStore
        Where the records go.
    max_records : int
        Records per statement; a larger queue is written in several statements.
    """

    def __init__(self, store: AuditStore, *, max_records: int = INSERT_CHUNK) -> None:
        self.store = store
        self.max_records = max_records
        # One queue per running event loop: a test client or a second server thread runs
        # its own loop, and a future may only be resolved on the loop that created it.
        self._queues: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[_Queued]
        ] = weakref.WeakKeyDictionary()

    async def write(self, record: AuditRecord) -> dict[str, AuditRecord]:
        """Write ``record`` with the others queued in this turn; return like ``write``.

        Raises
        ------
        IdempotencyConflictError
            If the transaction id is stored with other features; nothing was written.
        AuditError
            If the record could not be written.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, AuditRecord]] = loop.create_future()
        queue = self._queues.setdefault(loop, [])
        queue.append((record, future))
        if len(queue) == 1:
            # Requests that run before this callback join the group.
            loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        queue = self._queues.pop(loop, [])
        for start in range(0, len(queue), self.max_records):
            group = queue[start:start + self.max_records]
            outcomes = self._write_group([record for record, _future in group])
            for (_record, future), outcome in zip(group, outcomes, strict=True):
                # A cancelled request's record is written all the same, but its result is dropped.
                if future.cancelled():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _write_group(self, records: list[AuditRecord]) -> list[_Outcome]:
        logger.debug("writing an audit group of %d record(s)", len(records))
        try:
            return list(self.store.write_each(records))
        except AuditError as exc:
            if len(records) > 1 and _rejected_statement(exc):
                # The server rejected the statement, or a value could not be rendered. One
                # record may be at fault, so each is written alone and only that one fails.
                logger.warning("audit group of %d record(s) was rejected (%s); writing each "
                               "record on its own", len(records), exc)
                return [self._write_alone(record) for record in records]
            return [exc] * len(records)
        except Exception as exc:  # a bug: each waiting request gets it, not the loop
            logger.exception("audit group of %d record(s) failed", len(records))
            return [exc] * len(records)

    def _write_alone(self, record: AuditRecord) -> _Outcome:
        try:
            return self.store.write_each([record])[0]
        except AuditError as exc:
            return exc


def _rejected_statement(exc: AuditError) -> bool:
    """True when the database returned an error, rather than being unreachable."""
    cause = exc.__cause__
    return (isinstance(cause, DatabaseError) and not cause.connection_lost
            and not isinstance(cause, PoolTimeoutError))
