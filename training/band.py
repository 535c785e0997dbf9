"""Choosing the uncertainty band and the decision threshold on the validation period.

For every candidate band ``[low, high)`` (edges at quantiles of the validation stage-1
probabilities) whose escalation rate is within the budget, the system score is stage 2's
probability inside the band and stage 1's outside. The decision threshold of a band is
the one that maximizes F1 of the system score.

The chosen band maximizes the system's average precision. Among the bands whose average
precision is within :data:`AP_TOLERANCE` of the best, it takes the one with the highest
recall at its threshold, then the one that escalates least. Average precision comes
first because the recall at an F1-optimal threshold moves with the precision that
threshold happens to reach, so recall alone would compare bands at different operating
points.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from fraudscore.routing import Band, combine

logger = logging.getLogger(__name__)

# Quantile levels of the validation stage-1 probabilities used as band edges: coarse in
# the bulk of genuine traffic, fine in the upper tail where the frauds are.
EDGE_LEVELS = np.unique(np.r_[np.linspace(0.0, 0.9, 19), np.linspace(0.9, 0.999, 45), 1.0])
CURVE_BUDGETS = np.round(np.arange(0.0, 0.2001, 0.01), 3)
# Bands whose validation AP is this close to the best are compared on recall.
AP_TOLERANCE = 0.005


@dataclass(frozen=True)
class BandScore:
    """System metrics on the validation period for one band."""

    low: float
    high: float
    escalation_rate: float
    average_precision: float
    recall: float
    precision: float
    threshold: float

    @property
    def objective(self) -> float:
        """Validation average precision of the system, the primary selection criterion."""
        return self.average_precision


@dataclass(frozen=True)
class ThresholdPoint:
    average_precision: float
    threshold: float
    recall: float
    precision: float


def curve_point(y: np.ndarray, scores: np.ndarray) -> ThresholdPoint:
    """Average precision (as scikit-learn defines it) and the F1-optimal threshold."""
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores = scores[order]
    sorted_labels = y[order]
    # Last index of each run of equal scores: one point of the curve per distinct score.
    last_of_run = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(scores) - 1]
    true_positives = np.cumsum(sorted_labels)[last_of_run]
    predicted = last_of_run + 1
    positives = true_positives[-1]
    if positives == 0:
        return ThresholdPoint(0.0, 1.0, 0.0, 0.0)

    precision = true_positives / predicted
    recall = true_positives / positives
    average_precision = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(precision), where=(precision + recall) > 0)
    best = int(np.argmax(f1))
    return ThresholdPoint(
        average_precision=average_precision,
        threshold=float(sorted_scores[last_of_run[best]]),
        recall=float(recall[best]),
        precision=float(precision[best]),
    )


def score_band(band: Band, y: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> BandScore:
    """Evaluate the two-stage system with ``band`` on validation labels and probabilities."""
    escalated = band.contains(p1)
    point = curve_point(y, combine(p1, p2, escalated))
    return BandScore(
        low=band.low, high=band.high, escalation_rate=float(escalated.mean()),
        average_precision=point.average_precision, recall=point.recall,
        precision=point.precision, threshold=point.threshold,
    )


def candidate_bands(
    p1: np.ndarray, *, max_rate: float, within: Band | None = None
) -> list[Band]:
    """Bands with edges at quantiles of ``p1`` that escalate at most ``max_rate``."""
    edges = np.unique(np.r_[np.quantile(p1, EDGE_LEVELS[:-1]), 1.0])
    if within is not None:
        edges = edges[(edges >= within.low) & (edges <= within.high)]
    sorted_p1 = np.sort(p1)
    position = np.searchsorted(sorted_p1, edges, side="left") / len(p1)
    bands = [Band(1.0, 1.0)]  # escalates nothing: stage 1 alone
    for i, low in enumerate(edges):
        for j in range(i + 1, len(edges)):
            if position[j] - position[i] > max_rate:
                break
            bands.append(Band(float(low), float(edges[j])))
    return bands


@dataclass
class BandSearch:
    """The chosen band, its score, and the escalation-vs-recall curve for the report."""

    best: BandScore
    evaluated: int
    curve: list[dict[str, float]]

    def to_dict(self) -> dict[str, object]:
        return {"best": asdict(self.best), "bands_evaluated": self.evaluated}


def search_band(
    y: np.ndarray,
    p1: np.ndarray,
    p2: np.ndarray,
    *,
    max_escalation: float,
    within: Band | None = None,
) -> BandSearch:
    """Choose the band that maximizes the system objective within the escalation budget."""
    curve_rate = max(max_escalation, float(CURVE_BUDGETS[-1]))
    scored = [score_band(band, y, p1, p2)
              for band in candidate_bands(p1, max_rate=curve_rate, within=within)]
    eligible = [s for s in scored if s.escalation_rate <= max_escalation]
    if not eligible:
        raise ValueError(f"no band escalates at most {max_escalation:.1%} of validation rows")
    best = _select(eligible)
    logger.info(
        "band [%.5f, %.5f): escalation %.2f%%, validation AP %.4f, recall %.4f (%d bands)",
        best.low, best.high, 100 * best.escalation_rate, best.average_precision, best.recall,
        len(scored),
    )
    return BandSearch(best=best, evaluated=len(scored), curve=_escalation_curve(scored))


def _escalation_curve(scored: list[BandScore]) -> list[dict[str, float]]:
    curve = []
    for budget in CURVE_BUDGETS:
        within_budget = [s for s in scored if s.escalation_rate <= budget]
        if not within_budget:
            continue
        best = _select(within_budget)
        curve.append({
            "budget": float(budget),
            "escalation_rate": best.escalation_rate,
            "system_recall": best.recall,
            "system_average_precision": best.average_precision,
            "low": best.low,
            "high": best.high,
        })
    return curve


def _select(scored: list[BandScore]) -> BandScore:
    top = max(s.average_precision for s in scored)
    close = [s for s in scored if s.average_precision >= top - AP_TOLERANCE]
    return max(close, key=lambda s: (round(s.recall, 6), -s.escalation_rate))
