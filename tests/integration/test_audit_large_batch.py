"""A batch larger than one INSERT's parameter limit is audited in full."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from fraudscore.audit import AuditStore, create_schema
from fraudscore.bundle import load_bundle
from fraudscore.database import create_audit_engine
from fraudscore.service import DecisionService, TransactionInput
from fraudscore.settings import Settings
from fraudscore.stage2_client import InProcessStage2
from fraudscore.storage import DirectoryStore

pytestmark = pytest.mark.postgres

ROWS = 5000  # 5,000 rows x 18 columns exceed PostgreSQL's 65,535 parameters per statement


@pytest.mark.parametrize("engine_kind", ["service", "plain"])
def test_large_batch_written_once(
    bundle_dir: Path, postgres_database_url: str, engine_kind: str
) -> None:
    engine = (create_audit_engine(Settings.from_env({}, database_url=postgres_database_url))
              if engine_kind == "service" else create_engine(postgres_database_url))
    create_schema(engine)
    bundle = load_bundle(DirectoryStore(bundle_dir))
    stage2 = InProcessStage2(bundle.stage2_model, n_features=len(bundle.schema),
                             calibration=bundle.stage2_calibration, bundle_version=bundle.version)
    store = AuditStore(engine)
    service = DecisionService(bundle, stage2, store)
    examples = json.loads((bundle_dir / "manifest.json").read_text())["example_transactions"]
    batch = [TransactionInput(f"big-{i}", examples["uncertain" if i % 3 else "confident_genuine"])
             for i in range(ROWS)]

    first = service.decide(batch)
    second = service.decide(batch)

    assert len(first.decisions) == ROWS
    assert store.count() == ROWS
    assert all(second.repeated)
    assert [d.fraud_probability for d in second.decisions] == pytest.approx(
        [d.fraud_probability for d in first.decisions])
    engine.dispose()
