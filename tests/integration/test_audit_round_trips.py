"""Audit writes cost one round trip to PostgreSQL per decision, and a few per batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fraudscore.audit import AuditStore, create_schema
from fraudscore.database import open_database_url
from tests.audit_records import make_audit_record

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(postgres_database_url: str) -> Iterator[AuditStore]:
    create_schema(postgres_database_url)
    store = AuditStore(open_database_url(postgres_database_url))
    store.write([make_audit_record("warm-up")])  # opens the pooled connection
    yield store
    store.close()


def _count_round_trips(store: AuditStore) -> list[int]:
    """Count pg8000's waits for a server response on the store's pooled connection."""
    calls = [0]
    with store.database.connection() as (connection, _reused):
        raw: Any = connection.raw  # type: ignore[attr-defined]
    original = raw.handle_messages

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    raw.handle_messages = counted
    return calls


def test_single_decision_one_round_trip(store: AuditStore) -> None:
    calls = _count_round_trips(store)

    store.write([make_audit_record("single")])

    assert calls[0] == 1
    assert store.count() == 2


def test_repeat_two_round_trips(store: AuditStore) -> None:
    first = make_audit_record("again")
    store.write([first])
    calls = _count_round_trips(store)

    repeats = store.write([make_audit_record("again")])

    assert calls[0] == 2  # the INSERT that skipped the row, then the SELECT of the stored one
    assert [stored.decision_id for stored in repeats.values()] == [first.decision_id]


def test_batch_three_round_trips(store: AuditStore) -> None:
    calls = _count_round_trips(store)

    store.write([make_audit_record(f"batch-{i}") for i in range(1000)])

    assert calls[0] == 3  # BEGIN, one multi-row INSERT, COMMIT
    assert store.count() == 1001

