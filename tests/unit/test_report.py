"""Tests of the training report writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.evaluate import evaluate_scores
from training.report import (
    ESCALATION_PLOT,
    PRECISION_RECALL_PLOT,
    STAGE1_HISTOGRAM_PLOT,
    write_report,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run() -> dict:
    """Return the arguments of write_report for a small synthetic two-stage run."""
    rng = np.random.default_rng(5)
    y_true = (rng.random(4000) < 0.02).astype(int)
    stage1 = np.clip(rng.beta(1, 30, 4000) + 0.4 * y_true * rng.random(4000), 0, 1)
    stage2 = np.clip(stage1 + 0.3 * y_true * rng.random(4000), 0, 1)
    band = (0.05, 0.4)
    escalated = (stage1 >= band[0]) & (stage1 <= band[1])
    system = np.where(escalated, stage2, stage1)

    metrics = {
        "stage1": evaluate_scores(y_true, stage1, threshold=0.3),
        "stage2": evaluate_scores(y_true[escalated], stage2[escalated], threshold=0.3),
        "system": evaluate_scores(y_true, system, threshold=0.3, escalated=escalated),
    }
    escalation_curve = [
        {
            "escalation_rate": rate,
            "system_recall": 0.5 + rate,
            "system_average_precision": 0.4 + rate / 2,
            "low": low,
            "high": 0.4,
        }
        for rate, low in ((0.01, 0.2), (0.05, 0.1), (0.12, 0.05), (0.3, 0.01))
    ]
    return {
        "metrics": metrics,
        "curves": {"stage 1": (y_true, stage1), "system": (y_true, system)},
        "band": band,
        "threshold": 0.3,
        "stage1_val_probs": rng.beta(1, 30, 3000),
        "escalation_curve": escalation_curve,
        "meta": {
            "data fingerprint": "sha256:0123abcd",
            "test period": "2018-08-08..2018-08-14",
            "stage-2 training mode": "band only",
            "columns": ["TX_AMOUNT", "TX_DURING_NIGHT"],
        },
    }


@pytest.fixture
def run() -> dict:
    return make_run()


@pytest.fixture
def without_plots(run) -> dict:
    """Run arguments that produce no plots, for fast checks of the Markdown."""
    return {**run, "curves": {}, "stage1_val_probs": [], "escalation_curve": []}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[dict, Path]:
    """Write one full report with plots and return its arguments and path."""
    run = make_run()
    out_dir = tmp_path_factory.mktemp("written") / "nested" / "report"
    return run, write_report(out_dir, **run)


def test_report_writes_markdown_and_plots(written):
    _, report_path = written
    out_dir = report_path.parent

    assert report_path == out_dir / "report.md"
    assert report_path.is_file()
    for name in (PRECISION_RECALL_PLOT, STAGE1_HISTOGRAM_PLOT, ESCALATION_PLOT):
        content = (out_dir / name).read_bytes()
        assert len(content) > 1000, name
        assert content.startswith(PNG_SIGNATURE), name
        assert f"]({name})" in report_path.read_text()


def test_report_table_has_metrics(written):
    run, report_path = written
    text = report_path.read_text()

    for model in ("stage1", "stage2", "system"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {model} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        model_metrics = run["metrics"][model]
        assert cells[1] == f"{model_metrics['auc_roc']:.4f}", model
        assert cells[2] == f"{model_metrics['average_precision']:.4f}", model
        assert cells[3] == "n/a", model
        assert cells[4] == f"{model_metrics['recall_at_threshold']:.4f}", model
        assert cells[5] == f"{model_metrics['precision_at_threshold']:.4f}", model
        assert cells[7] == str(model_metrics["n_transactions"]), model

    system_row = next(line for line in text.splitlines() if line.startswith("| system |"))
    assert f"| {run['metrics']['system']['escalation_rate']:.4f} |" in system_row


def test_report_rows_in_stage_order(tmp_path, without_plots):
    metrics = without_plots["metrics"]
    without_plots["metrics"] = {name: metrics[name] for name in ("system", "stage2", "stage1")}

    text = write_report(tmp_path, **without_plots).read_text()

    positions = [text.index(f"| {name} |") for name in ("stage1", "stage2", "system")]
    assert positions == sorted(positions)


def test_report_lists_meta(written):
    _, report_path = written
    text = report_path.read_text()

    assert "| data fingerprint | sha256:0123abcd |" in text
    assert "| test period | 2018-08-08..2018-08-14 |" in text
    assert '| columns | ["TX_AMOUNT", "TX_DURING_NIGHT"] |' in text
    assert "[0.0500, 0.4000)" in text
    assert ">= 0.3000" in text


def test_report_escapes_pipes_in_meta(tmp_path, without_plots):
    without_plots["meta"] = {"note": "a|b"}

    text = write_report(tmp_path, **without_plots).read_text()

    assert "| note | a\\|b |" in text
    assert "No plots" in text
    assert list(tmp_path.glob("*.png")) == []


def test_report_without_escalation_curve(tmp_path, run):
    run["escalation_curve"] = []

    text = write_report(tmp_path, **run).read_text()

    assert not (tmp_path / ESCALATION_PLOT).exists()
    assert ESCALATION_PLOT not in text
    assert (tmp_path / PRECISION_RECALL_PLOT).is_file()


def test_report_rejects_bad_input(tmp_path, run):
    with pytest.raises(ValueError, match="band must satisfy 0 <= low <= high <= 1"):
        write_report(tmp_path, **{**run, "band": (0.5, 0.2)})

    rows = [{"escalation_rate": 0.1, "system_recall": 0.5}]
    with pytest.raises(ValueError, match=r"escalation_curve\[0\] is missing key\(s\)"):
        write_report(tmp_path, **{**run, "escalation_curve": rows})
