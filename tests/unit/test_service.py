"""The decision service: routing, which probability is returned, what is audited."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fraudscore.breaker import CircuitBreaker
from fraudscore.bundle import load_bundle
from fraudscore.exceptions import AuditError, IdempotencyConflictError, Stage2Error
from fraudscore.service import DecisionService, TransactionInput
from fraudscore.settings import Stage2FailurePolicy
from fraudscore.stage2 import BoosterScorer
from fraudscore.stage2_client import InProcessStage2
from fraudscore.storage import DirectoryStore


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path):  # type: ignore[no-untyped-def]
    return load_bundle(DirectoryStore(bundle_dir))


def _in_process(bundle):  # type: ignore[no-untyped-def]
    return InProcessStage2(bundle.stage2_model, n_features=len(bundle.schema),
                           calibration=bundle.stage2_calibration, bundle_version=bundle.version)


class FailingStage2:
    calls = 0

    def score(self, features, *, bundle_version, correlation_id):  # type: ignore[no-untyped-def]
        self.calls += 1
        raise Stage2Error("timeout", "stage 2 did not answer in time")


class RecordingAudit:
    def __init__(self, fail: bool = False) -> None:
        self.records: list = []
        self.fail = fail

    def write(self, records, keep_conflicts=False) -> dict:  # type: ignore[no-untyped-def]
        if self.fail:
            raise AuditError("database is down")
        self.records.extend(records)
        return {}


def test_escalated_answer_carries_stage2_probability(bundle, examples) -> None:  # type: ignore[no-untyped-def]
    service = DecisionService(bundle, _in_process(bundle), None)

    decision = service.decide([TransactionInput("t", examples["uncertain"])]).decisions[0]

    assert decision.stage == "stage2"
    assert decision.fraud_probability == decision.stage2_probability
    assert decision.fraud_probability != decision.stage1_probability
    assert decision.is_fraud == (decision.fraud_probability >= bundle.threshold)


def test_confident_answer_is_stage1_only(bundle, examples) -> None:  # type: ignore[no-untyped-def]
    service = DecisionService(bundle, FailingStage2(), None)

    decision = service.decide([TransactionInput("t", examples["confident_genuine"])]).decisions[0]

    assert decision.stage == "stage1"
    assert decision.stage2_probability is None
    assert decision.fraud_probability == decision.stage1_probability
    assert decision.degraded is False


def test_stage2_receives_raw_features(bundle, examples) -> None:  # type: ignore[no-untyped-def]
    service = DecisionService(bundle, _in_process(bundle), None)
    raw = bundle.schema.validate(examples["uncertain"])
    scorer = BoosterScorer.from_bytes(bundle.stage2_model, n_features=len(raw),
                                      calibration=bundle.stage2_calibration)
    standardized = (raw - bundle.stage1.mean) / bundle.stage1.scale

    served = service.decide([TransactionInput("t", examples["uncertain"])]).decisions[0]

    assert served.stage2_probability == pytest.approx(float(scorer.probability(raw)[0]), abs=1e-12)
    assert served.stage2_probability != pytest.approx(
        float(scorer.probability(standardized)[0]), abs=1e-6
    )


def test_batch_matches_single_decisions(bundle, examples) -> None:  # type: ignore[no-untyped-def]
    service = DecisionService(bundle, _in_process(bundle), None)
    inputs = [TransactionInput(f"t{i}", examples[name])
              for i, name in enumerate(["confident_genuine", "uncertain", "confident_genuine"])]

    batch = service.decide(inputs).decisions
    singles = [service.decide([item]).decisions[0] for item in inputs]

    for combined, single in zip(batch, singles, strict=True):
        assert combined.stage == single.stage
        assert combined.fraud_probability == pytest.approx(single.fraud_probability, abs=1e-12)


def test_every_decision_audited_once(bundle, examples) -> None:  # type: ignore[no-untyped-def]
    audit = RecordingAudit()
    service = DecisionService(bundle, _in_process(bundle), audit)  # type: ignore[arg-type]
    inputs = [TransactionInput(None, examples["uncertain"]),
              TransactionInput("given-id", examples["confident_genuine"])]

    result = service.decide(inputs, request_id="req-1")

    assert len(audit.records) == 2
    assert {r.request_id for r in audit.records} == {"req-1"}
    assert audit.records[1].transaction_id == "given-id"
    assert len(audit.records[0].transaction_id) == 32
    assert audit.records[0].stage == "stage2"
    assert audit.records[0].stage2_probability == result.decisions[0].stage2_probability
    assert audit.records[0].features == pytest.approx(examples["uncertain"])


def test_audit_failure_is_raised_not_swallowed(bundle, examples) -> None:  # type: ignore[no-untyped-def]
    service = DecisionService(bundle, _in_process(bundle), RecordingAudit(fail=True))  # type: ignore[arg-type]

    with pytest.raises(AuditError):
        service.decide([TransactionInput("t", examples["confident_genuine"])])


@pytest.mark.parametrize("policy", list(Stage2FailurePolicy))
def test_stage2_failure_degrades(bundle, examples, policy) -> None:  # type: ignore[no-untyped-def]
    service = DecisionService(bundle, FailingStage2(), None, failure_policy=policy)

    decision = service.decide([TransactionInput("t", examples["uncertain"])]).decisions[0]

    assert decision.degraded is True
    assert decision.degraded_reason == "timeout"
    assert decision.stage == "stage1"
    assert decision.fraud_probability == decision.stage1_probability
    assert decision.manual_review is (policy is Stage2FailurePolicy.REVIEW)


class BrokenStage2:
    def score(self, features, *, bundle_version, correlation_id):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in a stage-2 client")


def test_unexpected_stage2_error_degrades(bundle, examples, caplog) -> None:  # type: ignore[no-untyped-def]
    audit = RecordingAudit()
    service = DecisionService(bundle, BrokenStage2(), audit)

    with caplog.at_level(logging.ERROR, logger="fraudscore.service"):
        decision = service.decide([TransactionInput("t", examples["uncertain"])]).decisions[0]

    assert decision.degraded is True
    assert decision.degraded_reason == "internal_error"
    assert decision.stage == "stage1"
    assert [record.transaction_id for record in audit.records] == ["t"]
    assert "a bug in a stage-2 client" in caplog.text


def test_breaker_opening_is_logged_once(bundle, examples, caplog) -> None:  # type: ignore[no-untyped-def]
    service = DecisionService(bundle, FailingStage2(), None,
                              breaker=CircuitBreaker(2, cooldown_seconds=60.0))

    with caplog.at_level(logging.ERROR, logger="fraudscore.service"):
        reasons = [service.decide([TransactionInput(f"t{i}", examples["uncertain"])])
                   .decisions[0].degraded_reason for i in range(4)]

    opened = [r for r in caplog.records if "circuit breaker opened" in r.getMessage()]
    assert reasons == ["timeout", "timeout", "circuit_open", "circuit_open"]
    assert len(opened) == 1
    assert "timeout" in opened[0].getMessage()


def test_nan_feature_never_reaches_models(bundle, examples) -> None:  # type: ignore[no-untyped-def]
    service = DecisionService(bundle, FailingStage2(), None)
    features = dict(examples["uncertain"], TX_AMOUNT=float("nan"))

    with pytest.raises(ValueError, match="TX_AMOUNT"):
        service.decide([TransactionInput("t", features)])
    assert np.isnan(features["TX_AMOUNT"])


def test_conflicting_ids_in_one_request(bundle, examples) -> None:  # type: ignore[no-untyped-def]
    conflicting = [TransactionInput("same", examples["uncertain"]),
                   TransactionInput(None, examples["uncertain"]),
                   TransactionInput("same", examples["confident_genuine"])]
    audit = RecordingAudit()
    audited = DecisionService(bundle, _in_process(bundle), audit)  # type: ignore[arg-type]

    with pytest.raises(IdempotencyConflictError, match="appears twice") as raised:
        audited.decide(conflicting)

    assert raised.value.row == 2
    assert audit.records == []
    # Equal features under one id are a repeat, not a conflict.
    repeated = [conflicting[0], TransactionInput("same", examples["uncertain"])]
    assert len(audited.decide(repeated).decisions) == 2
    # Without audit, ids are not checked.
    unaudited = DecisionService(bundle, _in_process(bundle), None)
    assert len(unaudited.decide(conflicting).decisions) == 3
