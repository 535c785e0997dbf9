"""The audit trail keeps every returned decision while PostgreSQL is unreachable."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from fraudscore.audit import AuditStore, create_schema
from fraudscore.audit_replay import replay_spool
from fraudscore.database import open_database_url
from tests.audit_records import make_audit_record
from tests.tcp_proxy import CuttableProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REQUESTS = 1200
OUTAGE = range(300, 800)


@pytest.fixture
def proxied_database(postgres_database_url: str):  # type: ignore[no-untyped-def]
    url = make_url(postgres_database_url)
    proxy = CuttableProxy(url.host or "127.0.0.1", url.port or 5432)
    yield url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), proxy
    proxy.close()


def _client_with_spool(make_client, database_url: str, spool: Path):  # type: ignore[no-untyped-def]
    """Return a client whose audit writes give up on the database after 1 s and go to ``spool``."""
    return make_client(database_url=database_url, audit_spool_path=str(spool),
                       database_connect_timeout_seconds=1.0, database_pool_timeout_seconds=1.0)


def test_outage_loses_and_duplicates_nothing(  # type: ignore[no-untyped-def]
    make_client, proxied_database, postgres_database_url: str, bundle_dir: Path, tmp_path: Path
) -> None:
    database_url, proxy = proxied_database
    direct = create_engine(postgres_database_url)
    create_schema(postgres_database_url)
    spool = tmp_path / "spool.jsonl"
    client = _client_with_spool(make_client, database_url, spool)
    examples = json.loads((bundle_dir / "manifest.json").read_text())["example_transactions"]
    kinds = ["confident_genuine", "uncertain"]

    returned = []
    health_during_outage = None
    for i in range(REQUESTS):
        if i == OUTAGE.start:
            proxy.cut()
        if i == OUTAGE.stop:
            proxy.restore()
        body = {"transaction_id": f"tx-{i}", "features": examples[kinds[i % 2]]}
        response = client.post("/predict", json=body)
        assert response.status_code == 200, (i, response.text)
        returned.append(response.json())
        if i == OUTAGE.start + 10:
            health_during_outage = client.get("/health").json()

    assert health_during_outage is not None
    assert health_during_outage["audit_fallback"] == "spool"
    assert health_during_outage["status"] == "degraded"
    spooled = sum(1 for _ in spool.open())
    assert spooled >= len(OUTAGE) - 5  # a few requests may land before the pool notices

    runtime = client.app.state.runtime
    assert replay_spool(spool, runtime.audit).replayed == spooled
    assert replay_spool(spool, runtime.audit).replayed == 0  # a second replay finds nothing

    with direct.connect() as connection:
        rows = connection.execute(text(
            "SELECT transaction_id, count(*) AS n FROM audit_decisions GROUP BY transaction_id"
        )).all()
    counts = {row.transaction_id: row.n for row in rows}
    assert len(counts) == REQUESTS
    assert set(counts) == {answer["transaction_id"] for answer in returned}
    assert set(counts.values()) == {1}
    assert client.get("/health").json()["audit_fallback"] is None
    direct.dispose()


def test_health_recovers_after_replay(  # type: ignore[no-untyped-def]
    make_client, proxied_database, postgres_database_url: str, bundle_dir: Path, tmp_path: Path
) -> None:
    database_url, proxy = proxied_database
    create_schema(postgres_database_url)
    spool = tmp_path / "spool.jsonl"
    client = _client_with_spool(make_client, database_url, spool)
    examples = json.loads((bundle_dir / "manifest.json").read_text())["example_transactions"]
    proxy.cut()
    answered = client.post("/predict", json={"transaction_id": "during-outage",
                                             "features": examples["confident_genuine"]})
    proxy.restore()
    health_before_replay = client.get("/health").json()

    replayed = replay_spool(spool, client.app.state.runtime.audit).replayed
    health_after_replay = client.get("/health").json()

    assert answered.status_code == 200
    assert health_before_replay["status"] == "degraded"
    assert health_before_replay["audit_fallback"] == "spool"
    assert health_before_replay["audit_spool_pending"] == 1
    assert replayed == 1
    assert health_after_replay["audit_spool_pending"] == 0
    assert health_after_replay["audit_fallback"] is None
    assert health_after_replay["status"] == "ok"


def test_replaying_twice_adds_nothing(  # type: ignore[no-untyped-def]
    make_client, postgres_database_url: str, bundle_dir: Path, tmp_path: Path
) -> None:
    direct = create_engine(postgres_database_url)
    create_schema(postgres_database_url)
    spool = tmp_path / "spool.jsonl"
    client = make_client(database_url=postgres_database_url, audit_spool_path=str(spool))
    examples = json.loads((bundle_dir / "manifest.json").read_text())["example_transactions"]
    client.post("/predict", json={"transaction_id": "once", "features": examples["uncertain"]})
    with direct.connect() as connection:
        row = connection.execute(text("SELECT * FROM audit_decisions")).mappings().one()
    record_json = json.dumps({**{k: v for k, v in row.items()
                                 if k not in {"idempotency_key", "idempotency_conflict"}},
                              "decided_at": row["decided_at"].isoformat()})
    spool.write_text(record_json + "\n" + record_json + "\n")

    replayed = replay_spool(spool, client.app.state.runtime.audit).replayed

    with direct.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM audit_decisions")).scalar_one()
    assert replayed == 2
    assert count == 1
    direct.dispose()


def test_dead_pooled_connection_retried_once(  # type: ignore[no-untyped-def]
    proxied_database, postgres_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database_url, proxy = proxied_database
    create_schema(postgres_database_url)
    store = AuditStore(open_database_url(database_url))
    store.write([make_audit_record("before-restart")])

    # The server side of the pooled connection goes away, as on a database restart; new
    # connections work again at once.
    proxy.cut()
    proxy.restore()
    with caplog.at_level(logging.WARNING, logger="fraudscore.audit"):
        repeats = store.write([make_audit_record("after-restart")])
    store.close()

    direct = AuditStore(open_database_url(postgres_database_url))
    stored = direct.count()
    direct.close()
    assert repeats == {}
    assert "retrying once" in caplog.text
    assert stored == 2

