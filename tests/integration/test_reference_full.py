"""The full reference data set: the two-stage system meets its quality target.

Target: system average precision on the handbook's test week at least 0.687 (the
handbook's best XGBoost after model selection) with at most 10 % of transactions
escalated. docs/model-quality.md records the full figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.pipeline import TrainConfig, train
from training.splits import SplitConfig

pytestmark = [pytest.mark.reference_data, pytest.mark.slow]

HANDBOOK_BEST_AP = 0.687
HANDBOOK_LOGISTIC_AP = 0.606


def test_full_reference_run_meets_target(reference_data_path: Path, tmp_path: Path) -> None:
    config = TrainConfig(
        out_dir=tmp_path / "bundle",
        splits=SplitConfig(test_start="2018-08-08", train_start="2018-05-08"),
        progress=False,
    )
    bundle = train(config, data_path=reference_data_path)
    metrics = json.loads((bundle / "manifest.json").read_text())["metrics"]["test"]
    system, stage1 = metrics["system"], metrics["stage1"]
    print(json.dumps(metrics, indent=1))

    assert system["n_transactions"] == 58264
    assert system["escalation_rate"] <= 0.10
    assert system["average_precision"] >= HANDBOOK_BEST_AP
    assert stage1["average_precision"] >= HANDBOOK_LOGISTIC_AP - 0.01
    assert system["recall_at_threshold"] > stage1["recall_at_threshold"]
