"""AWS fallback path: records go to SQS when PostgreSQL fails, the replay function writes them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from fastapi.testclient import TestClient
from moto import mock_aws
from sqlalchemy import create_engine, text

from fraudscore.api.app import create_app
from fraudscore.audit import AuditRecord, create_schema
from fraudscore.audit_fallback import SqsFallback
from fraudscore.exceptions import AuditError
from fraudscore.runtime import Runtime
from tests.lambda_events import FakeLambdaContext, load_function_module


@pytest.fixture
def aws(aws_credentials: None):  # type: ignore[no-untyped-def]
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def _record(decision_id: str, transaction_id: str) -> AuditRecord:
    return AuditRecord(
        decision_id=decision_id, request_id="r", transaction_id=transaction_id,
        decided_at=datetime(2026, 12, 4, tzinfo=UTC), features={"x": 1.0},
        features_sha256="0" * 64, stage1_probability=0.1, stage2_probability=None,
        final_probability=0.1, is_fraud=False, stage="stage1", model_version="v",
        latency_ms=1.0,
    )


def _sqs_event(messages: list[dict]) -> dict:
    return {"Records": [{
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:audit-fallback",
        "awsRegion": "us-east-1",
    } for message in messages]}


def _receive_all(sqs, queue_url: str) -> list[dict]:  # type: ignore[no-untyped-def]
    messages: list[dict] = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)\
            .get("Messages", []):
        messages.extend(batch)
    return messages


def _queue_client(settings_factory, tmp_path: Path, queue_url: str, sqs) -> TestClient:  # type: ignore[no-untyped-def]
    """Return a client whose audit database cannot be opened and whose fallback is ``queue_url``."""
    broken = settings_factory(database_url=f"sqlite:///{tmp_path}/missing/dir/audit.db",
                              audit_fallback_queue_url=queue_url)
    runtime = Runtime.start(broken)
    runtime.service.fallback = SqsFallback(queue_url, sqs)  # type: ignore[union-attr]
    return TestClient(create_app(runtime))


def test_queue_fallback_then_replay_function(  # type: ignore[no-untyped-def]
    aws, settings_factory, bundle_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue_url = aws.create_queue(QueueName="audit-fallback")["QueueUrl"]
    client = _queue_client(settings_factory, tmp_path, queue_url, aws)
    examples = json.loads((bundle_dir / "manifest.json").read_text())["example_transactions"]

    answers = [client.post("/predict", json={"transaction_id": f"q-{i}",
                                             "features": examples["uncertain"]})
               for i in range(12)]

    assert [a.status_code for a in answers] == [200] * 12
    assert client.get("/health").json()["audit_fallback"] == "sqs"
    messages = _receive_all(aws, queue_url)
    assert len(messages) == 12

    database = tmp_path / "replayed.db"
    create_schema(f"sqlite:///{database}")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
    replay = load_function_module("functions/audit_replay/handler.py")
    event = _sqs_event(messages + messages[:3])  # redelivered messages must not duplicate

    result = replay.handler(event, FakeLambdaContext(function_name="audit-replay"))

    assert result == {"batchItemFailures": []}
    with create_engine(f"sqlite:///{database}").connect() as connection:
        rows = connection.execute(text("SELECT transaction_id FROM audit_decisions")).all()
    assert sorted(row.transaction_id for row in rows) == sorted(f"q-{i}" for i in range(12))


def test_replay_reports_unwritable_records(  # type: ignore[no-untyped-def]
    aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "replayed.db"
    create_schema(f"sqlite:///{database}")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{database}")
    replay = load_function_module("functions/audit_replay/handler.py")
    good = _record("d-good", "t-good")
    messages = [
        {"MessageId": "m-bad", "ReceiptHandle": "r1", "Body": "{not json", "MD5OfBody": ""},
        {"MessageId": "m-good", "ReceiptHandle": "r2", "Body": good.to_json(), "MD5OfBody": ""},
    ]

    partial = replay.handler(_sqs_event(messages), FakeLambdaContext(function_name="replay"))

    assert partial == {"batchItemFailures": [{"itemIdentifier": "m-bad"}]}
    with pytest.raises(BatchProcessingError):
        replay.handler(_sqs_event(messages[:1]), FakeLambdaContext(function_name="replay"))
    with create_engine(f"sqlite:///{database}").connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM audit_decisions")).scalar_one()
    assert count == 1


def test_queue_send_failure_raises(aws) -> None:  # type: ignore[no-untyped-def]
    fallback = SqsFallback("https://sqs.us-east-1.amazonaws.com/123456789012/missing", aws)
    record = _record("d1", "t1")

    with pytest.raises(AuditError, match="queue"):
        fallback.write([record])


def test_health_reports_failed_queue_send(  # type: ignore[no-untyped-def]
    aws, settings_factory, bundle_dir: Path, tmp_path: Path,
) -> None:
    missing_queue = "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue"
    client = _queue_client(settings_factory, tmp_path, missing_queue, aws)
    examples = json.loads((bundle_dir / "manifest.json").read_text())["example_transactions"]
    body = {"transaction_id": "q-lost", "features": examples["uncertain"]}

    # Not probed: health is degraded until a send fails.
    assert client.get("/health").json()["status"] == "degraded"
    assert client.post("/predict", json=body).status_code == 503
    health = client.get("/health")

    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert "fallback queue send failed" in health.json()["audit_fallback_error"]
