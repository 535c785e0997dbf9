"""Routing between the stages: the uncertainty band and the decision threshold."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, slots=True)
class Band:
    """Stage-1 probabilities in ``[low, high)`` are uncertain and escalated to stage 2."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise ValueError(f"band must satisfy 0 <= low <= high <= 1, got {self}")

    def contains(self, probability: np.ndarray) -> np.ndarray:
        """Boolean mask of the probabilities that fall in the band."""
        return (probability >= self.low) & (probability < self.high)

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Band:
        return cls(low=float(raw["low"]), high=float(raw["high"]))


def combine(
    stage1_probability: np.ndarray,
    stage2_probability: np.ndarray,
    escalated: np.ndarray,
) -> np.ndarray:
    """Final probability: stage 2's where a row was escalated, stage 1's elsewhere."""
    return np.where(escalated, stage2_probability, stage1_probability)
