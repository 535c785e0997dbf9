"""Training report: a Markdown summary of the test metrics with PNG plots."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, precision_recall_curve

logger = logging.getLogger(__name__)

REPORT_NAME = "report.md"
PRECISION_RECALL_PLOT = "precision_recall.png"
STAGE1_HISTOGRAM_PLOT = "stage1_probabilities.png"
ESCALATION_PLOT = "escalation_vs_recall.png"

MODEL_ORDER = ("stage1", "stage2", "system")
METRIC_COLUMNS = (
    ("AUC ROC", "auc_roc"),
    ("AP", "average_precision"),
    ("CP@100", "card_precision_at_100"),
    ("recall@thr", "recall_at_threshold"),
    ("precision@thr", "precision_at_threshold"),
    ("escalation rate", "escalation_rate"),
)
ESCALATION_CURVE_KEYS = frozenset(
    {"escalation_rate", "system_recall", "system_average_precision", "low", "high"}
)


def write_report(
    out_dir: Path,
    *,
    metrics: Mapping[str, Mapping[str, Any]],
    curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    band: tuple[float, float],
    threshold: float,
    stage1_val_probs: Sequence[float] | np.ndarray,
    escalation_curve: Sequence[Mapping[str, float]],
    meta: Mapping[str, Any],
) -> Path:
    """Write ``report.md`` and its PNG plots into ``out_dir``.

    Parameters
    ----------
    out_dir : pathlib.Path
        Output directory, created if missing. Existing report files are overwritten.
    metrics : mapping
        ``{"stage1": ..., "stage2": ..., "system": ...}``, each the dictionary that
        ``training.evaluate.evaluate_scores`` returns on the test period.
    curves : mapping
        Model name to ``(y_true, scores)`` on the test period, drawn as
        precision-recall curves in one figure.
    band : tuple of float
        ``(low, high)`` stage-1 probabilities between which a transaction goes to stage 2.
    threshold : float
        Alert threshold.
    stage1_val_probs : array-like of shape (n_validation,)
        Stage-1 fraud probabilities on the validation period.
    escalation_curve : sequence of mapping
        Rows with ``escalation_rate``, ``system_recall``, ``system_average_precision``,
        ``low`` and ``high``, one per candidate band.
    meta : mapping
        Run facts shown as a table, such as the data fingerprint and split dates.

    Returns
    -------
    pathlib.Path
        Path of ``report.md``.
    """
    low, high = _check_band(band)
    probabilities = np.asarray(stage1_val_probs, dtype=np.float64).ravel()
    rows = _check_escalation_curve(escalation_curve)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    plots = {}
    if curves:
        plots["Precision-recall on the test period"] = _plot_precision_recall(
            out_dir / PRECISION_RECALL_PLOT, curves
        )
    if len(probabilities):
        plots["Stage-1 probabilities on the validation period"] = _plot_stage1_histogram(
            out_dir / STAGE1_HISTOGRAM_PLOT, probabilities, (low, high), threshold
        )
    if rows:
        plots["Escalation rate and system recall per candidate band"] = _plot_escalation(
            out_dir / ESCALATION_PLOT, rows, (low, high)
        )

    text = _render_markdown(metrics, meta, (low, high), threshold, plots)
    report_path = out_dir / REPORT_NAME
    report_path.write_text(text, encoding="utf-8")
    logger.info("wrote training report %s with %d plots", report_path, len(plots))
    return report_path


def _check_band(band: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(value) for value in band)
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {band!r}")
    return low, high


def _check_escalation_curve(
    escalation_curve: Sequence[Mapping[str, float]],
) -> list[Mapping[str, float]]:
    for position, row in enumerate(escalation_curve):
        missing = ESCALATION_CURVE_KEYS - set(row)
        if missing:
            raise ValueError(f"escalation_curve[{position}] is missing key(s) {sorted(missing)}")
    return sorted(escalation_curve, key=lambda row: row["escalation_rate"])


def _format_value(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float | np.floating):
        return f"{value:.4f}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def _table_cell(value: Any) -> str:
    return _format_value(value).replace("|", "\\|").replace("\n", " ")


def _ordered_models(metrics: Mapping[str, Mapping[str, Any]]) -> list[str]:
    known = [name for name in MODEL_ORDER if name in metrics]
    return known + [name for name in metrics if name not in MODEL_ORDER]


def _render_markdown(
    metrics: Mapping[str, Mapping[str, Any]],
    meta: Mapping[str, Any],
    band: tuple[float, float],
    threshold: float,
    plots: Mapping[str, Path],
) -> str:
    lines = ["# Training report", "", "## Test metrics", ""]

    header = ["model", *(title for title, _ in METRIC_COLUMNS), "transactions", "frauds"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for name in _ordered_models(metrics):
        values = [metrics[name].get(key) for _, key in METRIC_COLUMNS]
        counts = [metrics[name].get("n_transactions"), metrics[name].get("n_frauds")]
        cells = [name, *(_table_cell(value) for value in [*values, *counts])]
        lines.append("| " + " | ".join(cells) + " |")

    lines += [
        "",
        f"Stage 2 scores transactions with a stage-1 probability in "
        f"[{band[0]:.4f}, {band[1]:.4f}) (low included, high excluded). "
        f"An alert is a score >= {threshold:.4f}.",
        "",
        "## Run",
        "",
        "| key | value |",
        "|---|---|",
    ]
    lines += [f"| {_table_cell(key)} | {_table_cell(value)} |" for key, value in meta.items()]

    lines += ["", "## Plots", ""]
    if not plots:
        lines.append("No plots: the curves, probabilities and escalation curve were empty.")
    for title, path in plots.items():
        lines += [f"### {title}", "", f"![{title}]({path.name})", ""]

    return "\n".join(lines).rstrip() + "\n"


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=120)
    return path


def _plot_precision_recall(
    path: Path, curves: Mapping[str, tuple[Sequence[int], Sequence[float]]]
) -> Path:
    figure = Figure(figsize=(6.5, 5), layout="constrained")
    axes = figure.add_subplot()

    prevalence = None
    for name, (y_true, scores) in curves.items():
        precision, recall, _ = precision_recall_curve(y_true, scores)
        average_precision = average_precision_score(y_true, scores)
        axes.step(recall, precision, where="post", label=f"{name} (AP {average_precision:.3f})")
        prevalence = float(np.mean(y_true))

    if prevalence is not None:
        axes.axhline(prevalence, color="grey", linestyle=":", label=f"fraud rate {prevalence:.4f}")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    axes.set_title("Precision-recall, test period")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    return _save(figure, path)


def _plot_stage1_histogram(
    path: Path, probabilities: np.ndarray, band: tuple[float, float], threshold: float
) -> Path:
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()

    axes.hist(probabilities, bins=np.linspace(0.0, 1.0, 101).tolist(), color="tab:blue", zorder=2)
    axes.set_yscale("log")
    axes.axvspan(
        *band,
        color="tab:orange",
        alpha=0.3,
        zorder=1,
        label=f"stage-2 band {band[0]:.3f}-{band[1]:.3f}",
    )
    axes.axvline(
        threshold, color="tab:red", linestyle="--", zorder=3, label=f"threshold {threshold:.3f}"
    )
    axes.set(xlabel="stage-1 fraud probability", ylabel="transactions (log scale)", xlim=(0, 1))
    axes.set_title(
        f"Stage-1 probabilities, validation period ({len(probabilities):,} transactions)"
    )
    axes.legend(loc="upper right")
    return _save(figure, path)


def _plot_escalation(
    path: Path, rows: Sequence[Mapping[str, float]], band: tuple[float, float]
) -> Path:
    figure = Figure(figsize=(6.5, 4.5), layout="constrained")
    axes = figure.add_subplot()

    escalation = [row["escalation_rate"] for row in rows]
    axes.plot(escalation, [row["system_recall"] for row in rows], marker="o", label="system recall")
    axes.plot(
        escalation,
        [row["system_average_precision"] for row in rows],
        marker="s",
        label="system average precision",
    )

    chosen = next(
        (
            row
            for row in rows
            if np.isclose(row["low"], band[0]) and np.isclose(row["high"], band[1])
        ),
        None,
    )
    if chosen is not None:
        axes.plot(
            chosen["escalation_rate"],
            chosen["system_recall"],
            "k*",
            markersize=14,
            label=f"chosen band {band[0]:.3f}-{band[1]:.3f}",
        )
    axes.set(xlabel="escalation rate (share of transactions sent to stage 2)", ylabel="value")
    axes.set_title("System recall and average precision per candidate band")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)
