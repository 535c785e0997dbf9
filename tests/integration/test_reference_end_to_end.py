"""Train on a slice of the reference data, serve through the Lambda handler, audit to PostgreSQL.

The slice (2018-07-04 to 2018-08-14) keeps the run to about a minute; the full-data
figures are recorded in docs/model-quality.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from fraudscore.audit import create_schema
from tests.lambda_events import FakeLambdaContext, http_api_event, load_function_module
from training.pipeline import TrainConfig, train
from training.splits import SplitConfig

pytestmark = [pytest.mark.reference_data, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def reference_bundle(reference_data_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    frame = pd.read_parquet(reference_data_path)
    sliced = frame[(frame["TX_DATETIME"] >= "2018-07-04") & (frame["TX_DATETIME"] < "2018-08-15")]
    data = tmp_path_factory.mktemp("reference") / "slice.parquet"
    sliced.to_parquet(data)
    out = tmp_path_factory.mktemp("reference-bundle")
    config = TrainConfig(out_dir=out, splits=SplitConfig(test_start="2018-08-08"), progress=False)
    return train(config, data_path=data)


def test_handler_serves_both_stages_and_audits(
    reference_bundle: Path, postgres_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_engine(postgres_database_url)
    create_schema(postgres_database_url)
    monkeypatch.setenv("MODEL_URI", str(reference_bundle))
    monkeypatch.setenv("DATABASE_URL", postgres_database_url)
    monkeypatch.setenv("API_BASE_PATH", "v1")
    stage1 = load_function_module("functions/stage1/app.py")
    examples = json.loads((reference_bundle / "manifest.json").read_text())["example_transactions"]

    answers = {}
    for name in ("confident_genuine", "uncertain"):
        event = http_api_event("POST", "/predict",
                               {"transaction_id": f"ref-{name}", "features": examples[name]})
        response = stage1.handler(event, FakeLambdaContext())
        assert response["statusCode"] == 200, response["body"]
        answers[name] = json.loads(response["body"])

    assert answers["confident_genuine"]["stage"] == "stage1"
    assert answers["uncertain"]["stage"] == "stage2"
    assert answers["uncertain"]["fraud_probability"] == answers["uncertain"]["stage2_probability"]
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT transaction_id, stage, final_probability, stage2_probability, model_version "
            "FROM audit_decisions ORDER BY transaction_id"
        )).all()
    assert [row.transaction_id for row in rows] == ["ref-confident_genuine", "ref-uncertain"]
    assert [row.stage for row in rows] == ["stage1", "stage2"]
    assert rows[1].final_probability == pytest.approx(answers["uncertain"]["fraud_probability"])
    assert rows[0].stage2_probability is None
    assert {row.model_version for row in rows} == {answers["uncertain"]["model_version"]}
    stage1.runtime.audit.close()
    engine.dispose()


def test_reference_slice_quality(reference_bundle: Path) -> None:
    metrics = json.loads((reference_bundle / "manifest.json").read_text())["metrics"]["test"]

    assert metrics["stage1"]["auc_roc"] > 0.8
    assert metrics["system"]["average_precision"] > metrics["stage1"]["average_precision"]
    assert metrics["system"]["escalation_rate"] <= 0.12
