"""Audit replay function: writes records from the fallback SQS queue to PostgreSQL.

Triggered by the audit fallback queue with ReportBatchItemFailures: a record that cannot
be written is reported back and stays on the queue (and reaches the dead-letter queue
after the redrive limit), while the others of the batch are deleted. Writes are
idempotent on the decision id, so a message delivered twice adds one row.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from fraudscore.audit import AuditRecord, AuditStore
from fraudscore.database import open_audit_database
from fraudscore.observability import log_modules_as_json, logger, metrics
from fraudscore.settings import Settings

log_modules_as_json()
processor = BatchProcessor(event_type=EventType.SQS)
_store: AuditStore | None = None


def _audit_store() -> AuditStore:
    # Created on first use and reused by the container's later invocations.
    global _store
    if _store is None:
        _store = AuditStore(open_audit_database(Settings.from_env()))
    return _store


def replay_record(record: SQSRecord) -> None:
    """Write one queued audit record; raise to leave it on the queue."""
    audit_record = AuditRecord.from_json(record.body)
    _audit_store().write([audit_record], keep_conflicts=True)
    logger.info("replayed audit record", extra={"decision_id": audit_record.decision_id,
                                                "message_id": record.message_id})
    metrics.add_metric(name="AuditRecordsReplayed", unit="Count", value=1)


@metrics.log_metrics
@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    """SQS batch entry point; returns the ids of the messages that failed."""
    return process_partial_response(
        event=event, record_handler=replay_record, processor=processor, context=context
    )
