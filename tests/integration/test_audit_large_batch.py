"""A batch larger than one multi-row INSERT is audited in full, once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fraudscore.audit import AuditStore, create_schema
from fraudscore.bundle import load_bundle
from fraudscore.database import open_audit_database
from fraudscore.service import DecisionService, TransactionInput
from fraudscore.settings import Settings
from fraudscore.stage2_client import InProcessStage2
from fraudscore.storage import DirectoryStore

pytestmark = pytest.mark.postgres

ROWS = 5000  # five multi-row INSERT statements in one transaction


def test_large_batch_written_once(bundle_dir: Path, postgres_database_url: str) -> None:
    database = open_audit_database(Settings.from_env({}, database_url=postgres_database_url))
    create_schema(database)
    bundle = load_bundle(DirectoryStore(bundle_dir))
    stage2 = InProcessStage2(bundle.stage2_model, n_features=len(bundle.schema),
                             calibration=bundle.stage2_calibration, bundle_version=bundle.version)
    store = AuditStore(database)
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
    database.close()
