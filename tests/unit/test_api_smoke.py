"""Happy paths of every endpoint through FastAPI's test client."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest


def _examples(bundle_dir: Path) -> dict[str, dict[str, float]]:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    return manifest["example_transactions"]


def test_predict_stage1_and_stage2(make_client, bundle_dir: Path) -> None:  # type: ignore[no-untyped-def]
    client = make_client()
    examples = _examples(bundle_dir)

    confident = client.post("/predict", json={"transaction_id": "t-1",
                                              "features": examples["confident_genuine"]})
    uncertain = client.post("/predict", json={"transaction_id": "t-2",
                                              "features": examples["uncertain"]})

    assert confident.status_code == 200, confident.text
    assert uncertain.status_code == 200, uncertain.text
    assert confident.json()["stage"] == "stage1"
    assert confident.json()["stage2_probability"] is None
    body = uncertain.json()
    assert body["stage"] == "stage2"
    assert body["fraud_probability"] == body["stage2_probability"]
    assert body["degraded"] is False


def test_health_metadata_page_docs(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client()

    health = client.get("/health")
    metadata = client.get("/metadata")
    page = client.get("/")
    docs = client.get("/docs")

    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert metadata.status_code == 200
    assert len(metadata.json()["features"]) == 15
    assert page.status_code == 200
    assert "Content-Security-Policy" in page.headers
    assert "<textarea" in page.text
    assert docs.status_code == 200


def test_app_serves_without_pydantic_v1(  # type: ignore[no-untyped-def]
    make_client, examples, monkeypatch
) -> None:
    # `make sam-build` removes pydantic.v1 from the stage-1 deployment.
    import pydantic

    monkeypatch.delattr(pydantic, "v1", raising=False)
    monkeypatch.setitem(sys.modules, "pydantic.v1", None)
    with pytest.raises(ImportError):
        from pydantic import v1  # noqa: F401

    client = make_client()
    decision = client.post("/predict", json={"features": examples["uncertain"]})
    invalid = client.post("/predict", json={"features": {"TX_AMOUNT": "x"}})
    schema = client.get("/openapi.json")

    assert decision.status_code == 200, decision.text
    assert invalid.status_code == 422
    assert schema.status_code == 200


def test_health_head_and_unique_operation_ids(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client()

    head = client.head("/health")
    operations = [operation["operationId"]
                  for path in client.get("/openapi.json").json()["paths"].values()
                  for operation in path.values()]

    assert head.status_code == 200
    assert len(operations) == len(set(operations))


def test_page_answers_head(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client()

    head = client.head("/")

    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/html")
    assert head.content == b""
