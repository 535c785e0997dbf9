"""Platt calibration: maps a model's raw probability onto the shared probability scale."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_EPSILON = 1e-12


def logit(probability: np.ndarray) -> np.ndarray:
    """Return log(p / (1 - p)) with p clipped away from 0 and 1."""
    clipped = np.clip(probability, _EPSILON, 1.0 - _EPSILON)
    return np.log(clipped) - np.log1p(-clipped)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Return the logistic function 1 / (1 + exp(-z)), stable for large |z|."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


@dataclass(frozen=True, slots=True)
class PlattCalibration:
    """Calibrated probability ``sigmoid(slope * logit(p) + intercept)``.

    The map is strictly increasing for a positive slope, so it never changes a model's
    ranking (AUC ROC and average precision stay the same). It only moves both stages
    onto one scale so that their probabilities can be compared and thresholded together.
    """

    slope: float = 1.0
    intercept: float = 0.0

    def apply(self, probability: np.ndarray) -> np.ndarray:
        return sigmoid(self.slope * logit(np.asarray(probability, dtype=np.float64))
                       + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        return {"method": "platt", "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PlattCalibration:
        if raw.get("method") != "platt":
            raise ValueError(f"unsupported calibration method {raw.get('method')!r}")
        return cls(slope=float(raw["slope"]), intercept=float(raw["intercept"]))
