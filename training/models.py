"""Fitting the two stages and their calibration.

scikit-learn and xgboost's sklearn wrapper are used here, at training time only; the
exported stage 1 is evaluated with numpy and stage 2 with a plain ``xgboost.Booster``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.preprocessing import StandardScaler

from fraudscore.calibration import PlattCalibration, logit
from fraudscore.stage1 import LogisticScorer

logger = logging.getLogger(__name__)

# Small grid searched on the validation period; early stopping picks the tree count.
DEFAULT_XGB_GRID: tuple[dict[str, Any], ...] = (
    {"max_depth": 4, "learning_rate": 0.1, "min_child_weight": 1},
    {"max_depth": 6, "learning_rate": 0.1, "min_child_weight": 1},
)
XGB_FIXED: dict[str, Any] = {
    "objective": "binary:logistic",
    "tree_method": "hist",
    "eval_metric": "aucpr",
    "subsample": 0.9,
    "colsample_bytree": 0.9,
}


def fit_stage1(x: np.ndarray, y: np.ndarray, *, seed: int = 42) -> tuple[LogisticScorer, Any]:
    """Fit ``StandardScaler`` + ``LogisticRegression`` and export them for numpy scoring.

    Returns the exported scorer (identity calibration) and the fitted scikit-learn pair,
    which tests use to check that both give the same probabilities.
    """
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(max_iter=1000, random_state=seed)
    model.fit(scaler.transform(x), y)
    scorer = LogisticScorer(
        mean=scaler.mean_.astype(np.float64),
        scale=scaler.scale_.astype(np.float64),
        coef=model.coef_[0].astype(np.float64),
        intercept=float(model.intercept_[0]),
    )
    return scorer, (scaler, model)


@dataclass
class Stage2Fit:
    """A trained booster and how it was chosen."""

    booster: xgboost.Booster
    params: dict[str, Any]
    best_iteration: int
    validation_average_precision: float
    candidates: list[dict[str, Any]] = field(default_factory=list)


def fit_stage2(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_validation: np.ndarray,
    y_validation: np.ndarray,
    *,
    grid: tuple[dict[str, Any], ...] = DEFAULT_XGB_GRID,
    max_rounds: int = 600,
    early_stopping_rounds: int = 40,
    seed: int = 42,
) -> Stage2Fit:
    """Fit an XGBoost classifier on raw features, choosing parameters by validation AP."""
    train = xgboost.DMatrix(x_train, label=y_train)
    validation = xgboost.DMatrix(x_validation, label=y_validation)
    best: Stage2Fit | None = None
    candidates: list[dict[str, Any]] = []

    for grid_params in grid:
        params = {**XGB_FIXED, **grid_params, "seed": seed, "nthread": os.cpu_count() or 1}
        booster = xgboost.train(
            params, train, num_boost_round=max_rounds, evals=[(validation, "validation")],
            early_stopping_rounds=early_stopping_rounds, verbose_eval=False,
        )
        booster = booster[: booster.best_iteration + 1]
        scores = booster.predict(validation)
        ap = float(average_precision_score(y_validation, scores))
        candidates.append({**grid_params, "trees": booster.num_boosted_rounds(),
                           "validation_average_precision": ap})
        logger.info("stage 2 candidate %s: %d trees, validation AP %.4f",
                    grid_params, booster.num_boosted_rounds(), ap)
        if best is None or ap > best.validation_average_precision:
            best = Stage2Fit(booster, params, booster.num_boosted_rounds(), ap)

    assert best is not None
    best.candidates = candidates
    return best


def fit_platt(raw_probability: np.ndarray, y: np.ndarray) -> PlattCalibration:
    """Fit ``sigmoid(a * logit(p) + b)`` to labels; returns identity when it cannot.

    A negative or zero slope would reverse or flatten the model's ranking, so the fit
    falls back to identity in that case and when ``y`` has a single class.
    """
    if len(np.unique(y)) < 2:
        return PlattCalibration()
    z = logit(np.asarray(raw_probability, dtype=np.float64)).reshape(-1, 1)
    model = LogisticRegression(C=1e6, max_iter=1000).fit(z, y)
    slope, intercept = float(model.coef_[0][0]), float(model.intercept_[0])
    if slope <= 0:
        logger.warning("Platt slope %.4f is not positive; using identity calibration", slope)
        return PlattCalibration()
    return PlattCalibration(slope=slope, intercept=intercept)
