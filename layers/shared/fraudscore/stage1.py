"""Stage-1 scorer: standardized logistic regression evaluated with numpy only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fraudscore.calibration import PlattCalibration, sigmoid


@dataclass(frozen=True)
class LogisticScorer:
    """Logistic regression on standardized features, exported from scikit-learn.

    ``probability(x) = sigmoid(((x - mean) / scale) @ coef + intercept)``, the same
    arithmetic as ``StandardScaler`` followed by ``LogisticRegression.predict_proba``.
    Scale entries of 0 (constant features) are stored as 1, as scikit-learn does.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    calibration: PlattCalibration = field(default_factory=PlattCalibration)

    def __post_init__(self) -> None:
        n_features = self.coef.shape[0]
        if self.mean.shape != (n_features,) or self.scale.shape != (n_features,):
            raise ValueError(
                f"stage-1 mean, scale and coef must all have shape ({n_features},)"
            )
        if np.any(self.scale <= 0):
            raise ValueError("stage-1 scale entries must be positive")
        # Fold the scaler into the weights once, so scoring is one dot product.
        weights = self.coef / self.scale
        object.__setattr__(self, "_weights", weights)
        object.__setattr__(self, "_bias", float(self.intercept - self.mean @ weights))

    def raw_probability(self, features: np.ndarray) -> np.ndarray:
        """Uncalibrated probability for rows of shape (n_samples, n_features) or (n_features,)."""
        return sigmoid(features @ self._weights + self._bias)  # type: ignore[attr-defined]

    def probability(self, features: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability, on the scale shared with stage 2."""
        return self.calibration.apply(self.raw_probability(features))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": "logistic_regression",
            "scaler_mean": self.mean.tolist(),
            "scaler_scale": self.scale.tolist(),
            "coefficients": self.coef.tolist(),
            "intercept": self.intercept,
            "calibration": self.calibration.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> LogisticScorer:
        return cls(
            mean=np.asarray(raw["scaler_mean"], dtype=np.float64),
            scale=np.asarray(raw["scaler_scale"], dtype=np.float64),
            coef=np.asarray(raw["coefficients"], dtype=np.float64),
            intercept=float(raw["intercept"]),
            calibration=PlattCalibration.from_dict(raw["calibration"]),
        )
