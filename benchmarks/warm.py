"""Figure 2: warm requests through the stage-1 Lambda handler, and the database's share.

The stage-1 function module is imported fresh for each audit setting, with its settings
in the environment as Lambda would set them. It is called with API Gateway HTTP API
(payload 2.0) events for two transactions: one that stage 1 decides, and one in the
uncertain band that goes to stage 2 in the same process. The reference is the minimal
FastAPI app of ``benchmarks.reference`` behind Mangum, called with the same events.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

from mangum import Mangum

from benchmarks.measure import Figure, patched_environ, quiet_stdout, summarize, time_calls
from benchmarks.postgres import round_trips
from benchmarks.reference import create_reference_app, reference_engine
from benchmarks.workspace import Workspace
from tests.lambda_events import FakeLambdaContext, http_api_event, load_function_module

logger = logging.getLogger(__name__)

GROUP = "warm handler"
FUNCTION = "functions/stage1/app.py"
# (audit setting, path) -> target median in ms.
TARGETS_MS = {
    ("audit off", "stage-1 decision"): 1.0,
    ("audit off", "escalated"): 2.0,
    ("PostgreSQL audit", "stage-1 decision"): 2.5,
}


def run(workspace: Workspace) -> list[Figure]:
    """Time warm handler calls with audit off, SQLite and PostgreSQL, in milliseconds."""
    audits = workspace.audit_targets("warm-audit.db")

    events = {
        "stage-1 decision": workspace.examples.get("confident_genuine") or workspace.sample[0],
    }
    if workspace.examples.get("uncertain"):
        events["escalated"] = workspace.examples["uncertain"]

    figures = []
    for audit_name, url in audits:
        ours = _service_handler(workspace, url)
        theirs = _reference_handler(workspace, url)
        for path, features in events.items():
            event = http_api_event("POST", "/predict", {"features": features})
            figures.append(_measure(workspace, audit_name, path, event, ours, theirs))
    if workspace.database_url:
        figures.extend(_database_round_trips(workspace))
    else:
        figures.append(Figure(GROUP, "PostgreSQL round trips", "ms", None,
                              note="skipped: PostgreSQL not reachable"))
    return figures


def _measure(workspace: Workspace, audit_name: str, path: str, event: dict[str, Any],
             ours: Callable[[dict[str, Any]], dict[str, Any]],
             theirs: Callable[[dict[str, Any]], dict[str, Any]]) -> Figure:
    mode = workspace.mode
    with quiet_stdout():
        for handler in (ours, theirs):
            response = handler(event)
            if response["statusCode"] != 200:
                raise RuntimeError(f"{audit_name}, {path}: handler returned "
                                   f"{response['statusCode']}: {response['body'][:300]}")
        gc.collect()
        mine = summarize(time_calls(lambda _i: ours(event), mode.handler_runs, warmup=100))
        reference = summarize(time_calls(lambda _i: theirs(event), mode.reference_handler_runs,
                                         warmup=20))
    limit = TARGETS_MS.get((audit_name, path))
    figure = Figure(
        GROUP, f"{path}, {audit_name}", "ms", mine.median, runs=mine.runs, p99=mine.p99,
        reference=reference.median, note=f"reference p99 {reference.p99:.2f} ms",
        extra={"reference_p99": reference.p99, "reference_runs": reference.runs},
    )
    if limit is not None:
        figure.target = f"median < {limit:g} ms"
        figure.met = mine.median < limit
    logger.info("warm %s, %s: %.3f ms (reference %.3f ms)", path, audit_name, mine.median,
                reference.median)
    return figure


def _service_handler(
    workspace: Workspace, url: str | None
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    environment = {
        "MODEL_URI": str(workspace.bundle_dir),
        "API_BASE_PATH": "/v1",
        "STAGE2_MODE": "inprocess",
        "AUDIT_ENABLED": "true" if url else "false",
        "DATABASE_URL": url or "sqlite://",
        "AUDIT_SPOOL_PATH": str(workspace.work / "warm-spool.jsonl"),
    }
    with patched_environ(environment):
        module = load_function_module(FUNCTION)
    if module.runtime.load_error:
        raise RuntimeError(f"stage-1 function failed to start: {module.runtime.load_error}")
    context = FakeLambdaContext()
    return lambda event: module.handler(event, context)


def _reference_handler(
    workspace: Workspace, url: str | None
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    app = create_reference_app(workspace.reference, reference_engine(url))
    handler = Mangum(app, lifespan="off", api_gateway_base_path="/v1")
    context: Any = FakeLambdaContext()
    return lambda event: handler(event, context)


def _database_round_trips(workspace: Workspace) -> list[Figure]:
    assert workspace.database_url is not None
    results = round_trips(workspace.database_url, workspace.mode.database_runs)
    sync, asynchronous, select = (results["insert_sync"], results["insert_async"],
                                  results["select"])
    return [
        Figure(GROUP, "PostgreSQL SELECT 1 round trip (pg8000)", "ms", select.median,
               runs=select.runs, p99=select.p99),
        Figure(GROUP, "PostgreSQL INSERT, autocommit, synchronous_commit=on", "ms",
               sync.median, runs=sync.runs, p99=sync.p99,
               note=f"commit waits for the WAL flush ({results['wal_sync_method']})"),
        Figure(GROUP, "PostgreSQL INSERT, autocommit, synchronous_commit=off", "ms",
               asynchronous.median, runs=asynchronous.runs, p99=asynchronous.p99,
               note="no wait for the WAL flush: the difference to =on is the disk's share"),
    ]
