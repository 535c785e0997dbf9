"""An audit store on a fresh PostgreSQL database, and a count of its round trips."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fraudscore.audit import AuditStore, create_schema
from fraudscore.database import open_database_url
from tests.audit_records import make_audit_record


@pytest.fixture
def postgres_store(postgres_database_url: str) -> Iterator[AuditStore]:
    """An audit store whose one pooled connection is already open."""
    create_schema(postgres_database_url)
    store = AuditStore(open_database_url(postgres_database_url))
    store.write([make_audit_record("warm-up")])  # opens the pooled connection
    yield store
    store.close()


def count_round_trips(store: AuditStore) -> list[int]:
    """Count pg8000's waits for a server response on the store's pooled connection.

    Returns a one-element list that the count updates in place.
    """
    calls = [0]
    with store.database.connection() as (connection, _reused):
        raw: Any = connection.raw  # type: ignore[attr-defined]
    original = raw.handle_messages

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    raw.handle_messages = counted
    return calls
