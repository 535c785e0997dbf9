"""Audit writes cost one round trip to PostgreSQL per decision, and a few per batch."""

from __future__ import annotations

import pytest

from fraudscore.audit import AuditStore
from tests.audit_records import make_audit_record
from tests.postgres_audit import count_round_trips

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(postgres_store: AuditStore) -> AuditStore:
    return postgres_store


def test_single_decision_one_round_trip(store: AuditStore) -> None:
    calls = count_round_trips(store)

    store.write([make_audit_record("single")])

    assert calls[0] == 1
    assert store.count() == 2


def test_repeat_two_round_trips(store: AuditStore) -> None:
    first = make_audit_record("again")
    store.write([first])
    calls = count_round_trips(store)

    repeats = store.write([make_audit_record("again")])

    assert calls[0] == 2  # the INSERT that skipped the row, then the SELECT of the stored one
    assert [stored.decision_id for stored in repeats.values()] == [first.decision_id]


def test_batch_three_round_trips(store: AuditStore) -> None:
    calls = count_round_trips(store)

    store.write([make_audit_record(f"batch-{i}") for i in range(1000)])

    assert calls[0] == 3  # BEGIN, one multi-row INSERT, COMMIT
    assert store.count() == 1001

