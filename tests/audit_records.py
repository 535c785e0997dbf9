"""Audit records for tests that write to the audit store directly."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from fraudscore.audit import AuditRecord


def make_audit_record(transaction_id: str | None = None, **changes: Any) -> AuditRecord:
    """Return a valid stage-1 record with a new decision id; ``changes`` override fields."""
    record = AuditRecord(
        decision_id=uuid.uuid4().hex,
        request_id="test",
        transaction_id=transaction_id or uuid.uuid4().hex,
        decided_at=datetime.now(UTC),
        features={"TX_AMOUNT": 10.0},
        features_sha256="a" * 64,
        stage1_probability=0.1,
        stage2_probability=None,
        final_probability=0.1,
        is_fraud=False,
        stage="stage1",
        model_version="test",
        latency_ms=0.5,
    )
    return dataclasses.replace(record, **changes)
