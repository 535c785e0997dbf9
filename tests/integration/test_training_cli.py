"""The ``python -m training`` command line: simulate, ingest, train (file and database), verify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from training.cli import main
from training.ingest import ingest_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["simulate", "ingest", "train", "publish", "verify"])
def test_every_command_has_help(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "training", command, "--help"],
                            cwd=ROOT, capture_output=True, text=True, check=False)

    assert result.returncode == 0
    assert f"python -m training {command}" in result.stdout


def test_simulate_train_verify_from_file(tmp_path: Path) -> None:
    data = tmp_path / "history.csv"
    bundle = tmp_path / "bundle"

    assert main(["simulate", "--out", str(data), "--customers", "400", "--terminals", "800",
                 "--days", "60", "--seed", "3"]) == 0
    assert main(["train", "--data", str(data), "--out", str(bundle), "--no-progress",
                 "--max-escalation", "0.05"]) == 0
    assert main(["verify", str(bundle)]) == 0

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["escalation"]["validation_rate"] <= 0.05
    assert (bundle / "report" / "report.md").is_file()


def test_forced_band_is_used(simulated_history: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"

    assert main(["train", "--data", str(simulated_history), "--out", str(bundle),
                 "--no-progress", "--band", "0.01", "0.5"]) == 0

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["band"] == {"low": 0.01, "high": 0.5}


@pytest.mark.postgres
def test_train_from_postgres_table(
    simulated_history: Path, postgres_database_url: str, tmp_path: Path
) -> None:
    engine = create_engine(postgres_database_url)
    inserted = ingest_file(simulated_history, engine, table="history", progress=False)
    engine.dispose()
    bundle = tmp_path / "bundle"

    code = main(["train", "--db", postgres_database_url, "--table", "history",
                 "--out", str(bundle), "--no-progress"])

    assert inserted > 10_000
    assert code == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["training_data"]["rows"] == inserted
    assert manifest["training_data"]["source"] == "postgresql table history"


@pytest.mark.parametrize("arguments, message", [
    (["train", "--data", "missing.parquet", "--out", "x"], "not found"),
    (["train", "--data", "x.parquet", "--out", "x", "--max-escalation", "2"], "between 0 and 1"),
    (["train", "--data", "x.parquet", "--out", "x", "--band", "0.6", "0.2"], "LOW <= HIGH"),
    (["verify", "no-such-bundle"], "bundle"),
])
def test_bad_arguments_exit_with_message(  # type: ignore[no-untyped-def]
    arguments, message, caplog: pytest.LogCaptureFixture
) -> None:
    code = main(arguments)

    assert code != 0
    assert message in caplog.text


def test_leaking_feature_rejected(simulated_history: Path, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    code = main(["train", "--data", str(simulated_history), "--out", str(tmp_path / "b"),
                 "--no-progress", "--features", "TX_AMOUNT", "TX_FRAUD_SCENARIO"])

    assert code == 2
    assert "TX_FRAUD_SCENARIO" in caplog.text


def test_renamed_label_copy_rejected(simulated_history: Path, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    import pandas as pd

    frame = pd.read_parquet(simulated_history)
    frame["CHARGEBACK_FLAG"] = frame["TX_FRAUD"]
    data = tmp_path / "leaky.parquet"
    frame.to_parquet(data)

    code = main(["train", "--data", str(data), "--out", str(tmp_path / "b"), "--no-progress",
                 "--features", "TX_AMOUNT", "CHARGEBACK_FLAG"])

    assert code == 2
    assert "CHARGEBACK_FLAG alone separates the label" in caplog.text
