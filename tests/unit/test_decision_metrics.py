"""Decision metrics: summed in memory, written as one CloudWatch EMF record per flush."""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from fraudscore.decision_metrics import ALWAYS_WRITTEN, DecisionMetrics

if TYPE_CHECKING:
    from fastapi.testclient import TestClient


def _emf_records(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if '"_aws"' in line]


def _metric_names(record: dict[str, Any]) -> set[str]:
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    return {metric["Name"] for metric in directive["Metrics"]}


def test_flush_writes_the_sums_of_all_requests(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = DecisionMetrics()
    metrics.add({"Decisions": 1, "Stage1Decisions": 1, "Escalations": 0})
    metrics.add({"Decisions": 3, "Stage1Decisions": 2, "Stage2Decisions": 1, "Escalations": 1},
                stage2_latency_ms=4.5)
    metrics.add({"Decisions": 1, "Stage2Decisions": 1, "Escalations": 1},
                stage2_latency_ms=7.25)
    capsys.readouterr()

    metrics.flush()

    (record,) = _emf_records(capsys.readouterr().out)
    assert record["Decisions"] == [5.0]
    assert record["Stage1Decisions"] == [3.0]
    assert record["Stage2Decisions"] == [2.0]
    assert record["Escalations"] == [2.0]
    assert record["Stage2Latency"] == [4.5, 7.25]


def test_flush_zero_counts_main_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics = DecisionMetrics()
    metrics.add({"Decisions": 0, "Stage2Errors": 0, "AuditWriteFailures": 0})
    capsys.readouterr()

    metrics.flush()

    (record,) = _emf_records(capsys.readouterr().out)
    assert _metric_names(record) == set(ALWAYS_WRITTEN)
    assert all(record[name] == [0.0] for name in ALWAYS_WRITTEN)


def test_failures_are_written_when_seen(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = DecisionMetrics()
    metrics.add({"AuditWriteFailures": 1})
    metrics.add({"Decisions": 1, "AuditWriteFailures": 1, "AuditFallbackWrites": 1})
    capsys.readouterr()

    metrics.flush()

    (record,) = _emf_records(capsys.readouterr().out)
    assert record["AuditWriteFailures"] == [2.0]
    assert record["AuditFallbackWrites"] == [1.0]
    assert "Stage2Errors" not in _metric_names(record)


def test_flush_without_requests_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = DecisionMetrics()
    metrics.add({"Decisions": 1})
    metrics.flush()
    capsys.readouterr()

    metrics.flush()

    assert _emf_records(capsys.readouterr().out) == []


# A flush whose last record would be empty makes Powertools warn; the order of flush avoids it.
@pytest.mark.filterwarnings("error:No application metrics")
def test_counts_from_many_threads_add_up(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = DecisionMetrics()

    def work() -> None:
        for _ in range(2000):
            metrics.add({"Decisions": 1, "Escalations": 1}, stage2_latency_ms=1.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    capsys.readouterr()
    metrics.flush()

    records = _emf_records(capsys.readouterr().out)
    # EMF allows 100 values per metric, so Powertools writes the latencies in several records.
    assert sum(value for r in records for value in r.get("Decisions", [])) == 16_000
    assert sum(len(r.get("Stage2Latency", [])) for r in records) == 16_000


def test_unknown_metric_name_rejected() -> None:
    with pytest.raises(ValueError, match="Decisionz"):
        DecisionMetrics().add({"Decisionz": 1})


def test_server_flushes_periodically_and_at_shutdown(
    make_client: Any, examples: dict[str, dict[str, float]],
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("fraudscore.api.app.FLUSH_INTERVAL_SECONDS", 0.05)
    client: TestClient = make_client(audit_enabled=False)
    capsys.readouterr()

    with client:  # runs the lifespan, as uvicorn does
        body = {"features": examples["confident_genuine"]}
        assert client.post("/predict", json=body).status_code == 200
        deadline = time.monotonic() + 5
        periodic: list[dict[str, Any]] = []
        while not periodic and time.monotonic() < deadline:
            time.sleep(0.05)
            periodic = _emf_records(capsys.readouterr().out)
        assert [record["Decisions"] for record in periodic] == [[1.0]]

        monkeypatch.setattr("fraudscore.api.app.FLUSH_INTERVAL_SECONDS", 3600.0)
        time.sleep(0.2)  # the flushing task is now asleep for an hour
        assert client.post("/predict", json=body).status_code == 200
        assert _emf_records(capsys.readouterr().out) == []

    assert [record["Decisions"] for record in _emf_records(capsys.readouterr().out)] == [[1.0]]
