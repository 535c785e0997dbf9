"""The outcome of scoring one transaction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    """Stage that produced the final probability."""

    STAGE1 = "stage1"
    STAGE2 = "stage2"


@dataclass(frozen=True, slots=True)
class Decision:
    """One fraud decision, as returned to the caller and written to the audit trail.

    ``fraud_probability`` is the final probability: stage 2's when the transaction was
    escalated and stage 2 returned a probability, stage 1's otherwise.
    """

    transaction_id: str
    is_fraud: bool
    fraud_probability: float
    stage: Stage
    stage1_probability: float
    stage2_probability: float | None
    model_version: str
    degraded: bool = False
    degraded_reason: str | None = None
    manual_review: bool = False

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["stage"] = str(self.stage)
        return payload
