"""Values the audit table cannot hold fail as AuditError, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fraudscore.audit import AuditStore, create_schema
from fraudscore.database import open_database_url
from fraudscore.exceptions import AuditError
from tests.audit_records import make_audit_record


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[AuditStore]:
    url = sqlite_url if request.param == "sqlite" \
        else request.getfixturevalue("postgres_database_url")
    create_schema(url)
    store = AuditStore(open_database_url(url))
    yield store
    store.close()


@pytest.mark.parametrize(
    "changes",
    [
        {"stage1_probability": float("nan")},
        {"features": {"TX_AMOUNT": float("inf")}},
    ],
    ids=["nan", "infinite-feature"],
)
def test_unstorable_value_raises_audit_error(store: AuditStore, changes: dict) -> None:
    with pytest.raises(AuditError):
        store.write([make_audit_record(**changes)])

    assert store.count() == 0
    assert store.ping()


def test_batch_with_one_bad_row_writes_none(store: AuditStore) -> None:
    batch = [make_audit_record(), make_audit_record(final_probability=float("nan")),
             make_audit_record()]

    with pytest.raises(AuditError):
        store.write(batch)

    assert store.count() == 0
