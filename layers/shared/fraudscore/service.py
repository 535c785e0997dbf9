"""The two-stage decision service: validate, score, route, escalate, audit.

Nothing here depends on HTTP or Lambda. The stage-1 handler wraps it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fraudscore.audit import AuditRecord, AuditStore
from fraudscore.audit_fallback import AuditFallback
from fraudscore.audit_group import AuditGroupWriter
from fraudscore.breaker import CircuitBreaker
from fraudscore.bundle import Bundle
from fraudscore.decision import Decision, Stage
from fraudscore.exceptions import AuditError, IdempotencyConflictError, Stage2Error
from fraudscore.routing import combine
from fraudscore.settings import Stage2FailurePolicy
from fraudscore.stage2_client import Stage2Client

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TransactionInput:
    """One transaction to score: its id (generated when absent) and raw features."""

    transaction_id: str | None
    features: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ScoredBatch:
    """Decisions of one request plus the audit records written for them.

    ``stage2_error`` is the reason stage 2 returned no probabilities (None when it did or was not
    needed); ``stage2_latency_ms`` is the time spent waiting for it.
    """

    request_id: str
    decisions: list[Decision]
    records: list[AuditRecord]
    latency_ms: float
    escalated: int
    stage2_latency_ms: float | None = None
    stage2_error: str | None = None
    audit_fallback: str | None = None
    repeated: tuple[bool, ...] = ()


@dataclass(frozen=True, slots=True)
class _Stage2Outcome:
    probability: np.ndarray
    responded: bool
    error: str | None
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class _Scored:
    """Decisions and audit records of one request, before the audit write."""

    request_id: str
    decisions: list[Decision]
    records: list[AuditRecord]
    latency_ms: float
    escalated: int
    stage2: _Stage2Outcome


def reject_conflicting_ids(transactions: Sequence[TransactionInput], matrix: np.ndarray) -> None:
    """Raise when one request gives a transaction id twice with different features.

    The audit write would reject such a request as an idempotency conflict, but while
    the database is down the fallback would store both. The check needs no database.

    Raises
    ------
    IdempotencyConflictError
        With ``row`` set to the second of the two rows.
    """
    ids = [t.transaction_id for t in transactions if t.transaction_id]
    if len(set(ids)) == len(ids):
        return
    first_digest: dict[str, str] = {}
    for row, (transaction, digest) in enumerate(zip(transactions, row_digests(matrix),
                                                    strict=True)):
        if not transaction.transaction_id:
            continue
        seen = first_digest.setdefault(transaction.transaction_id, digest)
        if seen != digest:
            error = IdempotencyConflictError(
                transaction.transaction_id,
                f"transaction_id {transaction.transaction_id!r} appears twice in the "
                "request with different features; use a new transaction_id",
            )
            error.row = row
            raise error


def row_digests(matrix: np.ndarray) -> list[str]:
    """Return the SHA-256 of each row's float64 bytes, to compare repeated transactions.

    All rows are read from one buffer of the 2-D ``matrix``. Adding 0.0 turns -0.0 into
    0.0, so two values that compare equal give the same digest.
    """
    raw = (np.asarray(matrix, dtype=np.float64) + 0.0).tobytes()
    step = matrix.shape[1] * 8
    return [hashlib.sha256(raw[start:start + step]).hexdigest()
            for start in range(0, len(raw), step)]


# Bits that make 128 random bits a version-4 UUID (RFC 9562), as uuid.uuid4() sets them.
_UUID4_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET = (0x8000 << 48) | (4 << 76)


def new_ids(count: int) -> list[str]:
    """Return ``count`` random version-4 UUIDs as 32 hex digits, like ``uuid4().hex``.

    One ``os.urandom`` call serves the whole batch instead of one call per id.
    """
    raw = os.urandom(16 * count)
    return [
        f"{(int.from_bytes(raw[start:start + 16]) & _UUID4_CLEAR) | _UUID4_SET:032x}"
        for start in range(0, 16 * count, 16)
    ]


class DecisionService:
    """Scores transactions with a bundle and records every decision.

    Parameters
    ----------
    bundle : Bundle
        The verified model bundle.
    stage2 : Stage2Client
        In-process booster or the stage-2 Lambda.
    audit : AuditStore or None
        Where decisions are recorded; None disables auditing (benchmarks only).
    failure_policy : Stage2FailurePolicy
        When stage 2 fails: keep the stage-1 decision, or also flag for manual review.
    breaker : CircuitBreaker or None
        Skips stage 2 while it keeps failing.
    fallback : AuditFallback or None
        Where records go when the audit store fails; without one, the failure is raised.
    """

    def __init__(
        self,
        bundle: Bundle,
        stage2: Stage2Client,
        audit: AuditStore | None,
        *,
        failure_policy: Stage2FailurePolicy = Stage2FailurePolicy.STAGE1,
        breaker: CircuitBreaker | None = None,
        fallback: AuditFallback | None = None,
    ) -> None:
        self.bundle = bundle
        self.stage2 = stage2
        self.audit = audit
        self.failure_policy = failure_policy
        self.breaker = breaker
        self.fallback = fallback
        self.audit_group = AuditGroupWriter(audit) if audit is not None else None
        # "ok" after the last write reached the database, the fallback's name otherwise.
        self.audit_status = "ok" if audit is not None else "disabled"
        # The error of the last fallback write, while the fallback failed too.
        self.fallback_error: str | None = None

    def decide(
        self, transactions: Sequence[TransactionInput], *, request_id: str | None = None
    ) -> ScoredBatch:
        """Score ``transactions`` and write one audit row per decision.

        Raises
        ------
        FeatureValidationError
            If any transaction's features do not match the schema; nothing is scored.
        IdempotencyConflictError
            If a transaction id was already scored with other features.
        AuditError
            If neither the audit store nor the fallback accepted the records; the
            decisions are then not returned.
        """
        scored = self._score(transactions, request_id)
        if self.audit is None:
            return self._complete(scored, {}, None)
        try:
            repeats = self.audit.write(scored.records)
        except (AuditError, IdempotencyConflictError) as exc:
            return self._complete(scored, {}, self._recover(scored, exc))
        self._audit_reached_database()
        return self._complete(scored, repeats, None)

    async def decide_async(
        self, transactions: Sequence[TransactionInput], *, request_id: str | None = None
    ) -> ScoredBatch:
        """Like :meth:`decide`, for a request served on an event loop.

        A single decision's audit record joins the group that :class:`AuditGroupWriter`
        writes, one INSERT for the concurrent requests of the event loop. Several
        decisions are written as :meth:`decide` writes them, in their own transaction, so
        a conflict on one of them still writes none.
        """
        if self.audit_group is None or len(transactions) != 1:
            return self.decide(transactions, request_id=request_id)
        scored = self._score(transactions, request_id)
        try:
            repeats = await self.audit_group.write(scored.records[0])
        except (AuditError, IdempotencyConflictError) as exc:
            return self._complete(scored, {}, self._recover(scored, exc))
        self._audit_reached_database()
        return self._complete(scored, repeats, None)

    def _audit_reached_database(self) -> None:
        self.audit_status = "ok"
        self.fallback_error = None

    def _score(
        self, transactions: Sequence[TransactionInput], request_id: str | None
    ) -> _Scored:
        started = time.perf_counter()
        request_id = request_id or new_ids(1)[0]
        matrix = self.bundle.schema.validate_many([t.features for t in transactions])
        if self.audit is not None:
            # Without audit, transaction ids are not checked for repeats at all.
            reject_conflicting_ids(transactions, matrix)

        stage1_probability = self.bundle.stage1.probability(matrix)
        escalated = self.bundle.band.contains(stage1_probability)
        outcome = self._score_stage2(matrix, escalated, request_id)
        scored_by_stage2 = escalated & outcome.responded
        final = combine(stage1_probability, outcome.probability, scored_by_stage2)

        latency_ms = (time.perf_counter() - started) * 1000.0
        decisions, records = self._build(
            transactions, matrix, stage1_probability, outcome, final, escalated,
            request_id=request_id, latency_ms=latency_ms,
        )
        return _Scored(request_id, decisions, records, latency_ms, int(escalated.sum()), outcome)

    def _recover(self, scored: _Scored, exc: AuditError | IdempotencyConflictError) -> str:
        """Handle a failed audit write: re-raise, or hand the records to the fallback.

        Returns the fallback's name when it took the records.
        """
        if isinstance(exc, IdempotencyConflictError):
            ids = [record.decision_id for record in scored.records]
            exc.row = ids.index(exc.decision_id) if exc.decision_id in ids else None
            raise exc
        if self.fallback is None:
            raise exc
        logger.error("audit store failed for request %s, using the %s fallback: %s",
                     scored.request_id, self.fallback.name, exc)
        try:
            self.fallback.write(scored.records)
        except AuditError as fallback_exc:
            self.fallback_error = str(fallback_exc)
            raise
        self.audit_status = self.fallback.name
        self.fallback_error = None
        return self.fallback.name

    @staticmethod
    def _complete(
        scored: _Scored, repeats: Mapping[str, AuditRecord], fallback: str | None
    ) -> ScoredBatch:
        """Return the request's decisions; a repeated transaction gets its stored one."""
        decisions, records = scored.decisions, scored.records
        repeated = tuple(record.decision_id in repeats for record in records)
        for i, record in enumerate(records):
            stored = repeats.get(record.decision_id)
            if stored is not None:
                decisions[i] = decision_from_record(stored)
                records[i] = stored
        outcome = scored.stage2
        return ScoredBatch(
            scored.request_id, decisions, records, scored.latency_ms, scored.escalated,
            outcome.latency_ms, outcome.error, fallback, repeated,
        )

    def _score_stage2(
        self, matrix: np.ndarray, escalated: np.ndarray, request_id: str
    ) -> _Stage2Outcome:
        probability = np.full(len(matrix), np.nan)
        if not escalated.any():
            return _Stage2Outcome(probability, False, None, None)
        if self.breaker is not None and not self.breaker.allow():
            return _Stage2Outcome(probability, False, "circuit_open", None)

        started = time.perf_counter()
        try:
            probability[escalated] = self.stage2.score(
                matrix[escalated], bundle_version=self.bundle.version, correlation_id=request_id
            )
        except Stage2Error as exc:
            logger.warning("stage 2 failed for request %s: %s", request_id, exc)
            reason = exc.reason
        except Exception:
            # Stage 2 only refines uncertain decisions: whatever it raises, the request
            # keeps its stage-1 decision under the failure policy and is audited.
            logger.exception("stage 2 raised an unexpected error for request %s", request_id)
            reason = "internal_error"
        else:
            if self.breaker is not None:
                self.breaker.record_success()
            return _Stage2Outcome(probability, True, None,
                                  (time.perf_counter() - started) * 1000.0)

        if self.breaker is not None and self.breaker.record_failure():
            logger.error("stage-2 circuit breaker opened after %d consecutive failures, so "
                         "stage 2 is skipped for %g s (last failure: %s)",
                         self.breaker.threshold, self.breaker.cooldown_seconds, reason)
        return _Stage2Outcome(probability, False, reason, (time.perf_counter() - started) * 1000.0)

    def _build(
        self,
        transactions: Sequence[TransactionInput],
        matrix: np.ndarray,
        stage1_probability: np.ndarray,
        stage2: _Stage2Outcome,
        final: np.ndarray,
        escalated: np.ndarray,
        *,
        request_id: str,
        latency_ms: float,
    ) -> tuple[list[Decision], list[AuditRecord]]:
        decided_at = datetime.now(UTC)
        names = self.bundle.schema.names
        threshold = self.bundle.threshold
        version = self.bundle.version
        review = self.failure_policy is Stage2FailurePolicy.REVIEW
        decisions: list[Decision] = []
        records: list[AuditRecord] = []

        # Python lists and one id batch: indexing numpy arrays per element is slow.
        rows = matrix.tolist()
        stage1_values = stage1_probability.tolist()
        stage2_values = stage2.probability.tolist()
        final_values = final.tolist()
        escalated_flags = escalated.tolist()
        digests = row_digests(matrix)
        decision_ids = new_ids(len(transactions))
        generated_ids = iter(new_ids(sum(1 for t in transactions if not t.transaction_id)))

        for i, transaction in enumerate(transactions):
            used_stage2 = escalated_flags[i] and stage2.responded
            degraded = escalated_flags[i] and not stage2.responded
            stage = Stage.STAGE2 if used_stage2 else Stage.STAGE1
            decision = Decision(
                transaction_id=transaction.transaction_id or next(generated_ids),
                is_fraud=final_values[i] >= threshold,
                fraud_probability=final_values[i],
                stage=stage,
                stage1_probability=stage1_values[i],
                stage2_probability=stage2_values[i] if used_stage2 else None,
                model_version=version,
                degraded=degraded,
                degraded_reason=stage2.error if degraded else None,
                manual_review=degraded and review,
            )
            decisions.append(decision)
            records.append(
                AuditRecord(
                    decision_id=decision_ids[i],
                    request_id=request_id,
                    transaction_id=decision.transaction_id,
                    decided_at=decided_at,
                    features=dict(zip(names, rows[i], strict=True)),
                    features_sha256=digests[i],
                    stage1_probability=decision.stage1_probability,
                    stage2_probability=decision.stage2_probability,
                    final_probability=decision.fraud_probability,
                    is_fraud=decision.is_fraud,
                    stage=str(stage),
                    model_version=version,
                    latency_ms=latency_ms,
                    degraded=degraded,
                    degraded_reason=decision.degraded_reason,
                    manual_review=decision.manual_review,
                )
            )
        return decisions, records


def decision_from_record(record: AuditRecord) -> Decision:
    """Rebuild the decision that ``record`` stores (for repeated transaction ids)."""
    return Decision(
        transaction_id=record.transaction_id,
        is_fraud=record.is_fraud,
        fraud_probability=record.final_probability,
        stage=Stage(record.stage),
        stage1_probability=record.stage1_probability,
        stage2_probability=record.stage2_probability,
        model_version=record.model_version,
        degraded=record.degraded,
        degraded_reason=record.degraded_reason,
        manual_review=record.manual_review,
    )


def decision_log_fields(decision: Decision, record: AuditRecord) -> dict[str, Any]:
    """Fields of the structured log line written for each decision (no feature values)."""
    return {
        "decision_id": record.decision_id,
        "request_id": record.request_id,
        **decision.to_dict(),
        "latency_ms": round(record.latency_ms, 3),
    }
