"""Happy paths of every endpoint through FastAPI's test client."""

from __future__ import annotations

import json
from pathlib import Path


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
