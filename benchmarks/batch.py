"""Figure 6: batch scoring throughput, in process and through ``/predict/batch``.

In process, ``DecisionService.decide`` scores batches of test-period rows with audit
off, SQLite and PostgreSQL; the reference scores the same rows from one DataFrame (its
usual batch path) and inserts its audit rows in one statement. Through the API, one
request of 1,000 transactions goes through FastAPI's TestClient to each app.
"""

from __future__ import annotations

import gc
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from benchmarks.measure import Figure, quiet_stdout
from benchmarks.reference import (
    create_reference_app,
    reference_engine,
    write_audit,
)
from benchmarks.workspace import Workspace
from fraudscore.api.app import create_app
from fraudscore.audit import AuditStore
from fraudscore.database import open_database_url
from fraudscore.runtime import Runtime, make_stage2_client
from fraudscore.service import DecisionService, TransactionInput
from fraudscore.settings import Settings

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

logger = logging.getLogger(__name__)

GROUP = "batch"
API_BATCH = 1_000
TARGET_PER_SECOND = 50_000


def run(workspace: Workspace) -> list[Figure]:
    """Measure decisions per second in process and through the batch endpoint."""
    audits = workspace.audit_targets("batch-audit.db")

    figures = []
    for audit_name, url in audits:
        for size in workspace.mode.batch_sizes:
            name = f"DecisionService.decide, {size:,} rows, {audit_name}"
            figures.append(_guarded(name, partial(_in_process, workspace, audit_name, url, size)))
    for audit_name, url in audits[:1] + audits[2:]:
        name = f"/predict/batch of {API_BATCH:,} (TestClient), {audit_name}"
        figures.append(_guarded(name, partial(_through_api, workspace, audit_name, url)))
    return figures


def _guarded(name: str, measure: Callable[[], Figure]) -> Figure:
    """Return the figure, or one that records why the service failed to produce it.

    A failure of the service under test is a result to report, not a broken suite.
    """
    try:
        return measure()
    except Exception as exc:
        logger.exception("batch figure %s failed", name)
        return Figure(GROUP, name, "decisions/s", None,
                      note=f"failed: {type(exc).__module__}.{type(exc).__name__}: {exc}"[:300])


def _rows(workspace: Workspace, size: int) -> list[dict[str, float]]:
    rows = workspace.sample
    return [rows[i % len(rows)] for i in range(size)]


def _rate(call: Callable[[], Any], size: int, repeats: int) -> tuple[float, list[float]]:
    """Median decisions per second over ``repeats`` calls, after one untimed call."""
    call()
    rates = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        call()
        rates.append(size / (time.perf_counter() - started))
    return statistics.median(rates), rates


def _in_process(workspace: Workspace, audit_name: str, url: str | None, size: int) -> Figure:
    bundle = workspace.bundle
    audit = AuditStore(open_database_url(url)) if url else None
    service = DecisionService(bundle, make_stage2_client(Settings(), bundle), audit)
    rows = _rows(workspace, size)
    transactions = [TransactionInput(None, row) for row in rows]

    reference = workspace.reference
    engine = reference_engine(url)

    def reference_decide() -> None:
        answers = reference.decide_many(rows)
        if engine is not None:
            write_audit(engine, rows, answers)

    repeats = workspace.mode.batch_repeats
    ours, ours_all = _rate(lambda: service.decide(transactions), size, repeats)
    theirs, _ = _rate(reference_decide, size, repeats)
    if audit is not None:
        audit.close()
    if engine is not None:
        engine.dispose()

    figure = Figure(
        GROUP, f"DecisionService.decide, {size:,} rows, {audit_name}", "decisions/s", ours,
        runs=repeats, reference=theirs, higher_is_better=True,
        note="reference: decide_many on one DataFrame" + (", one INSERT" if url else ""),
        extra={"rates": ours_all},
    )
    if url is None:
        figure.target = f">= {TARGET_PER_SECOND:,} decisions/s"
        figure.met = ours >= TARGET_PER_SECOND
    logger.info("batch %d rows, %s: %.0f/s (reference %.0f/s)", size, audit_name, ours, theirs)
    return figure


def _test_client(app: Any) -> TestClient:
    # Starlette 1.x warns that its TestClient should move from httpx to httpx2; the
    # client works either way, so the warning is kept out of the benchmark's output.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from fastapi.testclient import TestClient

    return TestClient(app)


def _post(client: TestClient, body: str) -> None:
    response = client.post("/predict/batch", content=body,
                           headers={"content-type": "application/json"})
    if response.status_code != 200:
        raise RuntimeError(f"/predict/batch returned {response.status_code}: "
                           f"{response.text[:300]}")


def _through_api(workspace: Workspace, audit_name: str, url: str | None) -> Figure:
    settings = Settings.from_env({}, model_uri=str(workspace.bundle_dir),
                                 audit_enabled=url is not None, database_url=url or "sqlite://",
                                 audit_spool_path=str(workspace.work / "batch-spool.jsonl"))
    runtime = Runtime.start(settings)
    if runtime.load_error:
        raise RuntimeError(f"runtime failed to start: {runtime.load_error}")
    client = _test_client(create_app(runtime))
    reference_client = _test_client(create_reference_app(workspace.reference,
                                                         reference_engine(url)))
    rows = _rows(workspace, API_BATCH)
    body = json.dumps({"transactions": [{"features": row} for row in rows]})

    repeats = workspace.mode.batch_repeats
    with quiet_stdout():
        ours, ours_all = _rate(lambda: _post(client, body), API_BATCH, repeats)
        theirs, _ = _rate(lambda: _post(reference_client, body), API_BATCH, repeats)
    if runtime.audit is not None:
        runtime.audit.close()
    return Figure(
        GROUP, f"/predict/batch of {API_BATCH:,} (TestClient), {audit_name}", "decisions/s",
        ours, runs=repeats, reference=theirs, higher_is_better=True, extra={"rates": ours_all},
    )
