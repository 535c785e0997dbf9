"""The usual approach, which the service is compared with.

A scikit-learn ``Pipeline(StandardScaler, LogisticRegression)`` and an ``XGBClassifier``,
fitted on the same training rows as the bundle, saved with joblib, loaded back, and asked
for ``predict_proba`` on a one-row pandas DataFrame per request. It routes with the
bundle's band, Platt calibration and threshold, so both services take the same decisions
up to floating-point noise and XGBoost's tree construction. The web layer is a minimal
FastAPI app behind Mangum with one pydantic model per body, and an optional audit row per
decision written with SQLAlchemy, one transaction per request.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
)

metadata = MetaData()

reference_decisions = Table(
    "reference_decisions",
    metadata,
    Column("decision_id", String(32), primary_key=True),
    Column("transaction_id", String(128), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("features", JSON, nullable=False),
    Column("fraud_probability", Float, nullable=False),
    Column("is_fraud", Boolean, nullable=False),
    Column("stage", String(16), nullable=False),
)


def _platt(probability: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    clipped = np.clip(probability, 1e-12, 1.0 - 1e-12)
    z = slope * (np.log(clipped) - np.log1p(-clipped)) + intercept
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class ReferenceModel:
    """The fitted scikit-learn pipeline and XGBoost classifier, with the bundle's routing."""

    features: list[str]
    stage1: Any
    stage2: Any
    band: tuple[float, float]
    threshold: float
    stage1_calibration: tuple[float, float]
    stage2_calibration: tuple[float, float]

    def to_artifact(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "stage1": self.stage1,
            "stage2": self.stage2,
            "band": self.band,
            "threshold": self.threshold,
            "stage1_calibration": self.stage1_calibration,
            "stage2_calibration": self.stage2_calibration,
        }

    def stage1_probability(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated stage-1 probability of each row of ``frame``."""
        raw = self.stage1.predict_proba(frame)[:, 1]
        return _platt(raw, *self.stage1_calibration)

    def stage2_probability(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated stage-2 probability of each row of ``frame``."""
        raw = self.stage2.predict_proba(frame)[:, 1]
        return _platt(raw, *self.stage2_calibration)

    def score_core(self, features: Mapping[str, float]) -> tuple[bool, bool]:
        """Return (is_fraud by stage 1, escalate) for one transaction: the scoring core."""
        frame = pd.DataFrame([features], columns=self.features)
        probability = float(self.stage1_probability(frame)[0])
        low, high = self.band
        return probability >= self.threshold, low <= probability < high

    def decide(self, features: Mapping[str, float]) -> dict[str, Any]:
        """Decide one transaction, with stage 2 when stage 1 is uncertain."""
        return self.decide_many([features])[0]

    def decide_many(self, rows: Sequence[Mapping[str, float]]) -> list[dict[str, Any]]:
        """Decide several transactions from one DataFrame, stage 2 on the uncertain rows."""
        frame = pd.DataFrame(list(rows), columns=self.features)
        final = self.stage1_probability(frame)
        low, high = self.band
        escalated = (final >= low) & (final < high)
        if escalated.any():
            final = final.copy()
            final[escalated] = self.stage2_probability(frame[escalated])
        return [
            {
                "is_fraud": bool(probability >= self.threshold),
                "fraud_probability": float(probability),
                "stage": "stage2" if was_escalated else "stage1",
            }
            for probability, was_escalated in zip(final, escalated, strict=True)
        ]


def fit_reference(
    train: pd.DataFrame, label: str, manifest: Mapping[str, Any], *, seed: int = 42
) -> ReferenceModel:
    """Fit both reference models on the bundle's training rows.

    Stage 1 is fitted on every row of ``train``. Stage 2 gets the bundle's XGBoost
    parameters and tree count. When the bundle has a stage-2 training band, stage 2 is
    fitted only on the rows whose calibrated stage-1 probability falls in it, as the
    training job does.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from xgboost import XGBClassifier

    features = [spec["name"] for spec in manifest["features"]]
    x, y = train[features], train[label].to_numpy()
    stage1 = Pipeline([
        ("scaler", StandardScaler()),
        ("model", LogisticRegression(max_iter=1000, random_state=seed)),
    ]).fit(x, y)

    model = ReferenceModel(
        features=features,
        stage1=stage1,
        stage2=None,
        band=(float(manifest["band"]["low"]), float(manifest["band"]["high"])),
        threshold=float(manifest["decision_threshold"]),
        stage1_calibration=_calibration(manifest["stage1"]["calibration"]),
        stage2_calibration=_calibration(manifest["stage2"]["calibration"]),
    )
    rows = np.ones(len(train), dtype=bool)
    training_band = manifest["stage2"].get("training_band")
    if training_band:
        p1 = model.stage1_probability(x)
        rows = (p1 >= training_band["low"]) & (p1 < training_band["high"])

    params = dict(manifest["stage2"]["params"])
    params.pop("nthread", None)
    random_state = params.pop("seed", seed)
    model.stage2 = XGBClassifier(
        n_estimators=int(manifest["stage2"]["trees"]), random_state=random_state,
        n_jobs=os.cpu_count(), **params,
    ).fit(x[rows], y[rows])
    return model


def _calibration(raw: Mapping[str, Any]) -> tuple[float, float]:
    return float(raw["slope"]), float(raw["intercept"])


def save_reference(model: ReferenceModel, path: Path) -> None:
    """Write the models and routing parameters with joblib."""
    joblib.dump(model.to_artifact(), path)


def load_reference(path: str | Path) -> ReferenceModel:
    """Load what :func:`save_reference` wrote (joblib, so this runs pickled code)."""
    artifact = joblib.load(path)
    return ReferenceModel(**artifact)


def reference_engine(url: str | None) -> Engine | None:
    """Return a pooled engine for the reference audit table, or None without a URL."""
    if not url:
        return None
    return create_engine(url)


def create_reference_schema(engine: Engine) -> None:
    """Create the reference audit table when it does not exist."""
    metadata.create_all(engine, checkfirst=True)


def write_audit(
    engine: Engine, features: Sequence[Mapping[str, float]], answers: Sequence[Mapping[str, Any]]
) -> None:
    """Insert one audit row per decision, all in one transaction."""
    decided_at = datetime.now(UTC)
    rows = [
        {
            "decision_id": uuid.uuid4().hex,
            "transaction_id": answer.get("transaction_id") or uuid.uuid4().hex,
            "decided_at": decided_at,
            "features": dict(values),
            "fraud_probability": answer["fraud_probability"],
            "is_fraud": answer["is_fraud"],
            "stage": answer["stage"],
        }
        for values, answer in zip(features, answers, strict=True)
    ]
    with engine.begin() as connection:
        connection.execute(insert(reference_decisions), rows)


class ReferenceTransaction(BaseModel):
    """One transaction: optional id and feature name to number."""

    transaction_id: str | None = None
    features: dict[str, float]


class ReferenceBatch(BaseModel):
    """Several transactions."""

    transactions: list[ReferenceTransaction]


def create_reference_app(model: ReferenceModel, engine: Engine | None = None) -> FastAPI:
    """Build the minimal FastAPI app of the usual approach around ``model``."""
    app = FastAPI(title="Reference fraud scoring")
    expected = set(model.features)

    def check(transaction: ReferenceTransaction) -> None:
        if set(transaction.features) != expected:
            wrong = sorted(set(transaction.features) ^ expected)
            raise HTTPException(422, f"features must be exactly the model's; check {wrong[:3]}")

    def decide(transactions: Sequence[ReferenceTransaction]) -> list[dict[str, Any]]:
        for transaction in transactions:
            check(transaction)
        features = [t.features for t in transactions]
        answers = model.decide_many(features)
        for transaction, answer in zip(transactions, answers, strict=True):
            answer["transaction_id"] = transaction.transaction_id or uuid.uuid4().hex
        if engine is not None:
            write_audit(engine, features, answers)
        return answers

    @app.post("/predict")
    def predict(transaction: ReferenceTransaction) -> dict[str, Any]:
        return decide([transaction])[0]

    @app.post("/predict/batch")
    def predict_batch(batch: ReferenceBatch) -> dict[str, Any]:
        return {"decisions": decide(batch.transactions)}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
