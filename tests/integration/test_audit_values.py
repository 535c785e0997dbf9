"""Values the audit table cannot hold fail as AuditError, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from fraudscore.audit import AuditRecord, AuditStore, create_schema
from fraudscore.database import open_database_url
from fraudscore.exceptions import AuditError


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[AuditStore]:
    url = sqlite_url if request.param == "sqlite" \
        else request.getfixturevalue("postgres_database_url")
    create_schema(url)
    store = AuditStore(open_database_url(url))
    yield store
    store.close()


def _record(**changes: object) -> AuditRecord:
    record = AuditRecord(
        decision_id=uuid.uuid4().hex, request_id="values", transaction_id=uuid.uuid4().hex,
        decided_at=datetime.now(UTC), features={"TX_AMOUNT": 10.0}, features_sha256="b" * 64,
        stage1_probability=0.1, stage2_probability=None, final_probability=0.1,
        is_fraud=False, stage="stage1", model_version="test", latency_ms=0.5,
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"stage1_probability": float("nan")},
        {"features": {"TX_AMOUNT": float("inf")}},
    ],
    ids=["nan", "infinite-feature"],
)
def test_unstorable_value_raises_audit_error(store: AuditStore, changes: dict) -> None:
    with pytest.raises(AuditError):
        store.write([_record(**changes)])

    assert store.count() == 0
    assert store.ping()


def test_batch_with_one_bad_row_writes_none(store: AuditStore) -> None:
    batch = [_record(), _record(final_probability=float("nan")), _record()]

    with pytest.raises(AuditError):
        store.write(batch)

    assert store.count() == 0
