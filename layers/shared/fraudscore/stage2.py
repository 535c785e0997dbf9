"""Stage-2 scorer: an XGBoost booster on the raw (unstandardized) features.

Stage 2 is trained and served on the same raw feature vector, in schema order. The
stage-1 scaler is never applied to its input. ``xgboost`` is imported only here, so the
stage-1 function never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fraudscore.calibration import PlattCalibration

if TYPE_CHECKING:
    import xgboost


@dataclass(frozen=True)
class BoosterScorer:
    """XGBoost binary classifier loaded from its own JSON or UBJSON model file."""

    booster: xgboost.Booster
    n_features: int
    calibration: PlattCalibration = field(default_factory=PlattCalibration)

    @classmethod
    def from_bytes(
        cls, raw: bytes, *, n_features: int, calibration: PlattCalibration
    ) -> BoosterScorer:
        """Load a model serialized by ``Booster.save_raw`` or ``save_model`` (JSON/UBJSON)."""
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(bytearray(raw))
        booster.set_param({"nthread": 1})
        if booster.num_features() != n_features:
            raise ValueError(
                f"stage-2 model expects {booster.num_features()} features, "
                f"schema has {n_features}"
            )
        return cls(booster=booster, n_features=n_features, calibration=calibration)

    def raw_probability(self, features: np.ndarray) -> np.ndarray:
        """Uncalibrated probability for rows of shape (n_samples, n_features)."""
        matrix = np.atleast_2d(np.asarray(features, dtype=np.float32))
        margin = self.booster.inplace_predict(matrix, predict_type="margin")
        return 1.0 / (1.0 + np.exp(-np.asarray(margin, dtype=np.float64)))

    def probability(self, features: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability, on the scale shared with stage 1."""
        return self.calibration.apply(self.raw_probability(features))
