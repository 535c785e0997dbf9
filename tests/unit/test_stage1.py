"""Stage 1 scored with numpy must equal scikit-learn's predict_proba."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudscore.calibration import PlattCalibration
from fraudscore.stage1 import LogisticScorer
from training.columns import DEFAULT_FEATURES, LABEL
from training.models import fit_platt, fit_stage1


@pytest.fixture(scope="module")
def history(simulated_history) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    return pd.read_parquet(simulated_history)


def test_numpy_scores_equal_sklearn(history: pd.DataFrame) -> None:
    x = history[list(DEFAULT_FEATURES)].to_numpy(np.float64)
    y = history[LABEL].to_numpy()
    scorer, (scaler, model) = fit_stage1(x, y)

    expected = model.predict_proba(scaler.transform(x))[:, 1]
    actual = scorer.raw_probability(x)

    assert np.max(np.abs(actual - expected)) < 1e-9


def test_exported_scorer_round_trips(history: pd.DataFrame) -> None:
    x = history[list(DEFAULT_FEATURES)].to_numpy(np.float64)
    scorer, _ = fit_stage1(x, history[LABEL].to_numpy())
    restored = LogisticScorer.from_dict(scorer.to_dict())

    np.testing.assert_array_equal(restored.probability(x[:500]), scorer.probability(x[:500]))


def test_single_row_equals_batch_row(history: pd.DataFrame) -> None:
    x = history[list(DEFAULT_FEATURES)].to_numpy(np.float64)
    scorer, _ = fit_stage1(x, history[LABEL].to_numpy())

    batch = scorer.probability(x[:20])
    singles = np.array([scorer.probability(row) for row in x[:20]])

    assert np.max(np.abs(batch - singles)) < 1e-12


def test_platt_keeps_ranking() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.001, 0.999, 1000)
    y = (rng.uniform(size=1000) < raw**2).astype(int)
    calibration = fit_platt(raw, y)

    calibrated = calibration.apply(raw)

    assert calibration.slope > 0
    np.testing.assert_array_equal(np.argsort(calibrated, kind="stable"),
                                  np.argsort(raw, kind="stable"))


def test_platt_single_class_is_identity() -> None:
    calibration = fit_platt(np.array([0.1, 0.2]), np.array([0, 0]))
    assert calibration == PlattCalibration()


def test_scorer_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        LogisticScorer(np.zeros(3), np.ones(2), np.zeros(3), 0.0)
