"""Group commit: the audit records of concurrent requests go out in one INSERT.

Under uvicorn, one worker's event loop serves many requests at once. If each request
sent its own INSERT, each would wait for its own commit (a WAL flush). Instead,
:class:`AuditGroupWriter` queues the record of each single-decision request and writes
every queued record with one statement (:meth:`AuditStore.write_each`): one round trip
and one commit for the group. Each request then resumes with its own outcome, as if it
had written alone.

The statement runs on the writer's own thread, so the event loop keeps serving other
requests (health checks included) while a write waits for the database, even one that
hangs until its timeout. One group per event loop is in flight at a time; the records
queued meanwhile form the next group.

Under Mangum a Lambda container serves one request at a time, so the stage-1 app writes
its audit records directly there (:meth:`AuditStore.write`), without this writer.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fraudscore.audit import INSERT_CHUNK, AuditRecord, AuditStore
from fraudscore.connection_pool import PoolTimeoutError
from fraudscore.exceptions import AuditError, DatabaseError

logger = logging.getLogger(__name__)

type _Queued = tuple[AuditRecord, asyncio.Future[dict[str, AuditRecord]]]
type _Outcome = dict[str, AuditRecord] | BaseException


@dataclass
class _LoopState:
    """Records waiting on one event loop, and whether a group is being written."""

    queue: list[_Queued] = field(default_factory=list)
    writing: bool = False


class AuditGroupWriter:
    """Writes the records queued on an event loop together, on a writer thread.

    Parameters
    ----------
    store : AuditStore
        Where the records go.
    max_records : int
        Records per statement; a larger group is written in several statements.
    """

    def __init__(self, store: AuditStore, *, max_records: int = INSERT_CHUNK) -> None:
        self.store = store
        self.max_records = max_records
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        # One state per running event loop: a test client or a second server thread runs
        # its own loop, and a future may only be resolved on the loop that created it.
        self._states: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, _LoopState
        ] = weakref.WeakKeyDictionary()

    async def write(self, record: AuditRecord) -> dict[str, AuditRecord]:
        """Write ``record`` with the others queued on this event loop; return like ``write``.

        Raises
        ------
        IdempotencyConflictError
            If the transaction id is stored with other features; nothing was written.
        AuditError
            If the record could not be written.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, AuditRecord]] = loop.create_future()
        state = self._states.setdefault(loop, _LoopState())
        state.queue.append((record, future))
        if len(state.queue) == 1 and not state.writing:
            # Requests that run before this callback join the group.
            loop.call_soon(self._start_group, loop, state)
        return await future

    def _start_group(self, loop: asyncio.AbstractEventLoop, state: _LoopState) -> None:
        if state.writing or not state.queue:
            return
        group, state.queue = state.queue, []
        state.writing = True
        records = [record for record, _future in group]
        written = loop.run_in_executor(self._executor, self._write_all, records)
        written.add_done_callback(lambda done: self._finish_group(loop, state, group, done))

    def _finish_group(self, loop: asyncio.AbstractEventLoop, state: _LoopState,
                      group: list[_Queued], done: asyncio.Future[list[_Outcome]]) -> None:
        state.writing = False
        outcomes: list[_Outcome]
        if done.cancelled():
            outcomes = [AuditError("audit write was cancelled")] * len(group)
        elif (error := done.exception()) is not None:
            outcomes = [error] * len(group)
        else:
            outcomes = done.result()
        for (_record, future), outcome in zip(group, outcomes, strict=True):
            # A cancelled request's record is written all the same, but its result is dropped.
            if future.cancelled():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        if state.queue:
            self._start_group(loop, state)

    def _write_all(self, records: list[AuditRecord]) -> list[_Outcome]:
        """Write ``records`` in statements of ``max_records`` (on the writer thread)."""
        outcomes: list[_Outcome] = []
        for start in range(0, len(records), self.max_records):
            outcomes.extend(self._write_group(records[start:start + self.max_records]))
        return outcomes

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
            return [_own_error(record, len(records), exc) for record in records]
        except Exception as exc:  # a bug: each waiting request gets it, not the loop
            logger.exception("audit group of %d record(s) failed", len(records))
            return [exc] * len(records)

    def _write_alone(self, record: AuditRecord) -> _Outcome:
        try:
            return self.store.write_each([record])[0]
        except AuditError as exc:
            return exc


def _own_error(record: AuditRecord, group_size: int, exc: AuditError) -> AuditError:
    """Build the error for one request of a failed group, naming only its own decision."""
    if group_size == 1:
        return exc
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    error = AuditError(f"audit insert of decision {record.decision_id} failed "
                       f"(written with {group_size - 1} other record(s)): {cause}")
    error.__cause__ = exc.__cause__
    return error


def _rejected_statement(exc: AuditError) -> bool:
    """True when the database returned an error, rather than being unreachable."""
    cause = exc.__cause__
    return (isinstance(cause, DatabaseError) and not cause.connection_lost
            and not isinstance(cause, PoolTimeoutError))
