"""Request and response bodies of the scoring API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fraudscore.schema import MAX_FEATURE_NAME_LENGTH

TRANSACTION_ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,128}$"

TransactionId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=TRANSACTION_ID_PATTERN,
        description="Caller's id of the transaction: 1-128 of A-Z a-z 0-9 . _ : -",
        examples=["tx-20260101-000123"],
    ),
]


class Transaction(BaseModel):
    """One transaction to score."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: TransactionId | None = Field(
        default=None, description="Generated (32 hex characters) when absent."
    )
    features: dict[
        Annotated[str, Field(max_length=MAX_FEATURE_NAME_LENGTH)], Any
    ] = Field(
        description="Feature name to number, exactly the features of the bundle's schema "
        "(see GET /metadata). Values must be finite JSON numbers inside each feature's range.",
        max_length=1024,
    )


class BatchRequest(BaseModel):
    """Several transactions scored in one request."""

    model_config = ConfigDict(extra="forbid")

    transactions: list[Transaction] = Field(min_length=1)


class DecisionResponse(BaseModel):
    """The decision on one transaction."""

    transaction_id: str
    is_fraud: bool
    fraud_probability: float = Field(
        description="Final probability: stage 2's when escalated, stage 1's otherwise."
    )
    stage: Literal["stage1", "stage2"]
    stage1_probability: float
    stage2_probability: float | None = Field(description="Null unless escalated.")
    model_version: str
    degraded: bool = Field(description="True when stage 2 was needed but returned no probability.")
    degraded_reason: str | None = None
    manual_review: bool = False


class BatchResponse(BaseModel):
    """Decisions in the order of the request's transactions."""

    request_id: str
    decisions: list[DecisionResponse]


class HealthResponse(BaseModel):
    """Liveness and readiness of this process."""

    status: Literal["ok", "degraded", "unavailable"]
    bundle_loaded: bool
    model_version: str | None
    audit_store: Literal["ok", "unreachable", "disabled"]
    audit_fallback: str | None = Field(
        default=None,
        description="'spool' or 'sqs' while audit records go to the fallback instead of "
        "the database; null when the database takes them.",
    )
    audit_spool_pending: int | None = Field(
        default=None, description="Records waiting in the local spool file for replay."
    )
    audit_fallback_error: str | None = Field(
        default=None,
        description="Why the fallback cannot take records: for the spool file, a check "
        "made now (not writable, disk nearly full); for the SQS queue, the error of its "
        "last send. With the database unreachable too, scoring requests get 503 and "
        "status is 'unavailable'.",
    )
    stage2_circuit_open: bool = False
    bundle_refused: str | None = Field(
        default=None,
        description="The last newly published bundle this process rejected, and why. The "
        "process keeps serving model_version.",
    )
    detail: str | None = None


class MetadataResponse(BaseModel):
    """The served bundle: version, schema, band, threshold and test metrics."""

    model_version: str
    format_version: int
    created_at: str
    features: list[dict[str, Any]]
    band: dict[str, float]
    decision_threshold: float
    stage2_training_rows: str | None
    metrics: dict[str, Any]
    example_transaction: dict[str, float]
    max_batch_size: int
