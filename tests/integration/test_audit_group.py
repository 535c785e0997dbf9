"""Group commit: concurrent single-decision writes share one INSERT on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from fraudscore.audit import AuditRecord, AuditStore
from fraudscore.audit_group import AuditGroupWriter
from fraudscore.database import open_database_url
from fraudscore.exceptions import AuditError, IdempotencyConflictError
from tests.audit_records import make_audit_record
from tests.ports import free_port
from tests.postgres_audit import count_round_trips

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(postgres_store: AuditStore) -> AuditStore:
    return postgres_store


def _stored_ids(store: AuditStore) -> set[str]:
    with store.database.connection() as (connection, _reused):
        return {row[0] for row in connection.query("SELECT decision_id FROM audit_decisions")}


async def _write_concurrently(
    writer: AuditGroupWriter, records: Sequence[AuditRecord]
) -> list[dict[str, AuditRecord] | BaseException]:
    return await asyncio.gather(*(writer.write(record) for record in records),
                                return_exceptions=True)


def test_write_each_one_round_trip(store: AuditStore) -> None:
    first = make_audit_record("taken")
    store.write([first])
    new = make_audit_record("fresh")
    repeat = make_audit_record("taken")
    conflict = make_audit_record("taken", features_sha256="b" * 64)
    calls = count_round_trips(store)

    outcomes = store.write_each([new, repeat, conflict])

    assert calls[0] == 2  # the INSERT, then the SELECT of the stored "taken" record
    assert outcomes[0] == {}
    assert outcomes[1] == {repeat.decision_id: first}
    assert isinstance(outcomes[2], IdempotencyConflictError)
    assert outcomes[2].decision_id == conflict.decision_id
    assert new.decision_id in _stored_ids(store)
    assert not {repeat.decision_id, conflict.decision_id} & _stored_ids(store)


def test_write_each_same_id_in_group(store: AuditStore) -> None:
    first = make_audit_record("same-id")
    again = make_audit_record("same-id")
    different = make_audit_record("same-id", features_sha256="c" * 64)

    outcomes = store.write_each([first, again, different])

    assert outcomes[0] == {}
    assert outcomes[1] == {again.decision_id: first}
    assert isinstance(outcomes[2], IdempotencyConflictError)


def test_group_concurrent_writes_one_insert(store: AuditStore) -> None:
    writer = AuditGroupWriter(store)
    records = [make_audit_record(f"group-{i}") for i in range(20)]
    calls = count_round_trips(store)

    outcomes = asyncio.run(_write_concurrently(writer, records))

    assert outcomes == [{}] * 20
    assert calls[0] == 1
    assert {r.decision_id for r in records} <= _stored_ids(store)


def test_group_conflict_fails_one_request(store: AuditStore) -> None:
    store.write([make_audit_record("used")])
    writer = AuditGroupWriter(store)
    records = [make_audit_record("ok-1"), make_audit_record("used", features_sha256="d" * 64),
               make_audit_record("ok-2")]

    outcomes = asyncio.run(_write_concurrently(writer, records))

    assert outcomes[0] == {}
    assert outcomes[2] == {}
    assert isinstance(outcomes[1], IdempotencyConflictError)
    assert {records[0].decision_id, records[2].decision_id} <= _stored_ids(store)


def test_group_rejected_record_fails_alone(store: AuditStore) -> None:
    writer = AuditGroupWriter(store)
    # A model version over varchar(64) makes PostgreSQL reject the whole statement.
    bad = make_audit_record("too-long", model_version="v" * 65)
    records = [make_audit_record("fine-1"), bad, make_audit_record("fine-2")]

    outcomes = asyncio.run(_write_concurrently(writer, records))

    assert outcomes[0] == {}
    assert outcomes[2] == {}
    assert isinstance(outcomes[1], AuditError)
    assert "22001" in str(outcomes[1])  # string_data_right_truncation
    assert {records[0].decision_id, records[2].decision_id} <= _stored_ids(store)
    assert bad.decision_id not in _stored_ids(store)


def test_group_database_down_fails_all_once() -> None:
    store = AuditStore(open_database_url(f"postgresql://postgres@127.0.0.1:{free_port()}/test",
                                         database_connect_timeout_seconds=2.0))
    attempts = [0]
    original = store.write_each

    def counted(records: Sequence[AuditRecord]) -> Any:
        attempts[0] += 1
        return original(records)

    store.write_each = counted  # type: ignore[method-assign]
    writer = AuditGroupWriter(store)

    outcomes = asyncio.run(_write_concurrently(writer, [make_audit_record() for _ in range(5)]))

    assert all(isinstance(outcome, AuditError) for outcome in outcomes)
    assert attempts[0] == 1
    store.close()


def test_group_over_limit_is_split(store: AuditStore) -> None:
    writer = AuditGroupWriter(store, max_records=2)
    records = [make_audit_record(f"split-{i}") for i in range(5)]
    calls = count_round_trips(store)

    outcomes = asyncio.run(_write_concurrently(writer, records))

    assert outcomes == [{}] * 5
    assert calls[0] == 3


def test_group_sequential_writes_alone(store: AuditStore) -> None:
    writer = AuditGroupWriter(store)
    calls = count_round_trips(store)

    async def one_after_another() -> None:
        for i in range(3):
            assert await writer.write(make_audit_record(f"alone-{i}")) == {}

    asyncio.run(one_after_another())

    assert calls[0] == 3
