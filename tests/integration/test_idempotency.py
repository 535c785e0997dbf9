"""Repeated transaction ids: same features give the stored decision, others give 409."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text

from fraudscore.audit import create_schema
from tests.conftest import CAPTURED_OUTPUT


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, sqlite_url: str) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return sqlite_url
    url = request.getfixturevalue("postgres_database_url")
    create_schema(url)
    return url


def _rows(url: str, transaction_id: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(
            text("SELECT count(*) FROM audit_decisions WHERE transaction_id = :t"),
            {"t": transaction_id},
        ).scalar_one()
    engine.dispose()
    return int(count)


def test_repeat_returns_stored_decision(make_client, database_url, examples) -> None:  # type: ignore[no-untyped-def]
    client = make_client(database_url=database_url)
    body = {"transaction_id": "repeat-1", "features": examples["uncertain"]}

    first = client.post("/predict", json=body)
    second = client.post("/predict", json=body)

    assert first.status_code == 200
    assert second.status_code == 200
    assert second.json() == first.json()
    assert _rows(database_url, "repeat-1") == 1


def test_negative_zero_repeats_zero(make_client, database_url, examples) -> None:  # type: ignore[no-untyped-def]
    client = make_client(database_url=database_url)
    features = dict(examples["uncertain"])
    name = next(key for key, value in features.items() if value == 0)
    first = client.post("/predict", json={"transaction_id": "zero-1", "features": features})

    features[name] = -0.0
    second = client.post("/predict", json={"transaction_id": "zero-1", "features": features})

    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    assert _rows(database_url, "zero-1") == 1


def test_reused_id_with_other_features_conflicts(make_client, database_url, examples) -> None:  # type: ignore[no-untyped-def]
    client = make_client(database_url=database_url)
    client.post("/predict", json={"transaction_id": "reuse-1",
                                  "features": examples["uncertain"]})

    response = client.post("/predict", json={"transaction_id": "reuse-1",
                                              "features": examples["confident_genuine"]})

    assert response.status_code == 409
    assert "reuse-1" in response.json()["detail"]
    assert _rows(database_url, "reuse-1") == 1


def test_batch_with_conflict_writes_nothing(make_client, database_url, examples) -> None:  # type: ignore[no-untyped-def]
    client = make_client(database_url=database_url)
    client.post("/predict", json={"transaction_id": "batch-taken",
                                  "features": examples["uncertain"]})
    batch = {"transactions": [
        {"transaction_id": "batch-new", "features": examples["uncertain"]},
        {"transaction_id": "batch-taken", "features": examples["confident_genuine"]},
    ]}

    response = client.post("/predict/batch", json=batch)

    assert response.status_code == 409
    assert _rows(database_url, "batch-new") == 0


def test_batch_repeat_is_idempotent(make_client, database_url, examples) -> None:  # type: ignore[no-untyped-def]
    client = make_client(database_url=database_url)
    batch = {"transactions": [
        {"transaction_id": f"b-{i}", "features": examples[name]}
        for i, name in enumerate(["uncertain", "confident_genuine", "uncertain"])
    ]}

    first = client.post("/predict/batch", json=batch)
    second = client.post("/predict/batch", json=batch)

    assert first.status_code == 200
    assert second.status_code == 200
    assert second.json()["decisions"] == first.json()["decisions"]
    assert [_rows(database_url, f"b-{i}") for i in range(3)] == [1, 1, 1]


def test_batch_conflict_names_position(make_client, database_url, examples) -> None:  # type: ignore[no-untyped-def]
    client = make_client(database_url=database_url)
    client.post("/predict", json={"transaction_id": "pos-taken",
                                  "features": examples["uncertain"]})
    batch = {"transactions": [
        {"transaction_id": "pos-new", "features": examples["uncertain"]},
        {"transaction_id": "pos-taken", "features": examples["confident_genuine"]},
    ]}

    response = client.post("/predict/batch", json=batch)

    assert response.status_code == 409
    assert "transactions[1]" in response.json()["detail"]


def test_duplicate_in_batch_names_second(make_client, database_url, examples) -> None:  # type: ignore[no-untyped-def]
    client = make_client(database_url=database_url)
    batch = {"transactions": [
        {"transaction_id": "dup-a", "features": examples["uncertain"]},
        {"transaction_id": "dup-b", "features": examples["uncertain"]},
        {"transaction_id": "dup-a", "features": examples["confident_genuine"]},
    ]}

    response = client.post("/predict/batch", json=batch)

    assert response.status_code == 409
    assert "transactions[2]" in response.json()["detail"]
    assert _rows(database_url, "dup-a") == 0
    assert _rows(database_url, "dup-b") == 0


def test_repeat_not_counted_as_decision(  # type: ignore[no-untyped-def]
    make_client, database_url, examples, capsys
) -> None:
    client = make_client(database_url=database_url)
    body = {"transaction_id": "count-once", "features": examples["confident_genuine"]}
    decision_metrics = client.app.state.runtime.decision_metrics
    client.post("/predict", json=body)
    decision_metrics.flush()
    capsys.readouterr()
    logged_before = len(CAPTURED_OUTPUT)

    client.post("/predict", json=body)
    decision_metrics.flush()
    output = capsys.readouterr().out
    logged = "\n".join(CAPTURED_OUTPUT[logged_before:])

    emf = [json.loads(line) for line in output.splitlines() if '"_aws"' in line]
    assert [record["Decisions"] for record in emf] == [[0.0]]
    assert "repeated decision returned" in logged
    assert '"decision"' not in logged


def test_repeat_not_counted_as_escalation(  # type: ignore[no-untyped-def]
    make_client, database_url, examples, capsys
) -> None:
    client = make_client(database_url=database_url)
    decision_metrics = client.app.state.runtime.decision_metrics
    body = {"transaction_id": "escalate-once", "features": examples["uncertain"]}
    first = client.post("/predict", json=body)
    decision_metrics.flush()
    capsys.readouterr()

    client.post("/predict", json=body)
    decision_metrics.flush()
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]

    assert first.json()["stage"] == "stage2"
    assert [record["Escalations"] for record in emf] == [[0.0]]
    assert [record["Decisions"] for record in emf] == [[0.0]]


def test_duplicate_in_batch_rejected_during_outage(  # type: ignore[no-untyped-def]
    outage_client, examples, tmp_path
) -> None:
    # Without a database, the conflict inside the request is still found.
    spool = tmp_path / "spool.jsonl"
    client = outage_client(spool)
    batch = {"transactions": [
        {"transaction_id": "dup-down", "features": examples["uncertain"]},
        {"transaction_id": "dup-down", "features": examples["confident_genuine"]},
    ]}

    response = client.post("/predict/batch", json=batch)

    assert response.status_code == 409
    assert "appears twice in the request" in response.json()["detail"]
    assert "transactions[1]" in response.json()["detail"]
    assert not spool.exists()
