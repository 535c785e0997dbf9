"""FastAPI application of the stage-1 function."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException

from fraudscore.api.models import (
    BatchRequest,
    BatchResponse,
    DecisionResponse,
    HealthResponse,
    MetadataResponse,
    Transaction,
)
from fraudscore.api.page import CONTENT_SECURITY_POLICY, render_page
from fraudscore.api.strict_json import StrictJSONRoute
from fraudscore.audit_fallback import SpoolFallback
from fraudscore.decision_metrics import FLUSH_INTERVAL_SECONDS, DecisionMetrics
from fraudscore.exceptions import AuditError, FeatureValidationError, IdempotencyConflictError
from fraudscore.observability import logger
from fraudscore.runtime import Runtime, refresh_bundle
from fraudscore.service import DecisionService, ScoredBatch, TransactionInput, decision_log_fields
from fraudscore.settings import Stage2Mode

# API Gateway request ids are base64-like and may end in "=".
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:=+/\-]{1,128}$")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
}


class ErrorResponse(BaseModel):
    """An error other than invalid features: what went wrong and what to do."""

    detail: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Invalid JSON or duplicate keys"},
    409: {"model": ErrorResponse,
          "description": "transaction_id already scored with other features"},
    413: {"model": ErrorResponse, "description": "Body over MAX_BODY_BYTES"},
    415: {"model": ErrorResponse, "description": "Content type is not application/json"},
    503: {"model": ErrorResponse,
          "description": "Bundle not loaded, or the decision could not be audited"},
}


class ServiceUnavailableError(Exception):
    """The process cannot score now (bundle not loaded, audit store down)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def create_app(runtime: Runtime) -> FastAPI:
    """Build the API around a started runtime (one per process)."""
    app = FastAPI(
        lifespan=_flushing_metrics(runtime.decision_metrics),
        title="Fraud scoring",
        summary="Two-stage fraud decisions: logistic regression, then XGBoost when uncertain.",
        version="1",
    )
    app.state.runtime = runtime
    if runtime.settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(runtime.settings.cors_allow_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization"],
        )

    app.include_router(_build_router(runtime))
    _add_exception_handlers(app)
    _add_security_headers(app)
    return app


def _flushing_metrics(
    decision_metrics: DecisionMetrics,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Lifespan of a long-running server: flush the metrics periodically and at shutdown.

    Under Mangum the lifespan is off and the Lambda handler flushes after each invocation.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async def flush_periodically() -> None:
            while True:
                await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
                decision_metrics.flush()

        task = asyncio.create_task(flush_periodically())
        try:
            yield
        finally:
            task.cancel()
            decision_metrics.flush()

    return lifespan


def with_root_path(app: Any, base_path: str) -> Any:
    """Wrap ``app`` so every request has ASGI ``root_path`` = ``base_path`` (e.g. ``/v1``).

    Behind an API Gateway stage the request path keeps the stage prefix. With the prefix
    as ``root_path``, Starlette routes on the rest of the path, and the generated links
    (the Swagger page's ``openapi.json``, redirects) keep the prefix. Paths that do not
    start with the prefix (a custom domain without it) are routed unchanged.
    """
    prefix = "/" + base_path.strip("/") if base_path.strip("/") else ""
    if not prefix:
        return app

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in {"http", "websocket"}:
            scope = {**scope, "root_path": prefix}
        await app(scope, receive, send)

    return wrapped


def _service(runtime: Runtime) -> DecisionService:
    if runtime.service is None:
        raise ServiceUnavailableError(f"the service failed to start: {runtime.load_error}")
    return runtime.service


def _request_id(request: Request) -> str:
    event = request.scope.get("aws.event") or {}
    aws_id = (event.get("requestContext") or {}).get("requestId")
    if isinstance(aws_id, str) and _REQUEST_ID_PATTERN.match(aws_id):
        return aws_id
    header = request.headers.get("x-request-id", "")
    if _REQUEST_ID_PATTERN.match(header):
        return header
    return uuid.uuid4().hex


def _decide(runtime: Runtime, transactions: list[Transaction], request_id: str) -> ScoredBatch:
    """Score on the calling thread (a worker thread when stage 2 is a network call)."""
    refresh_bundle(runtime)
    with _decision_errors(runtime, transactions, request_id):
        batch = _service(runtime).decide(_inputs(transactions), request_id=request_id)
    _observe(runtime, batch)
    return batch


async def _decide_async(
    runtime: Runtime, transactions: list[Transaction], request: Request
) -> ScoredBatch:
    """Score on the event loop, or in a worker thread when stage 2 is a network call.

    In-process scoring takes well under a millisecond, less than a thread handoff costs
    under load. Under uvicorn, the audit record of a single decision joins the event
    loop's group commit (:mod:`fraudscore.audit_group`), and a stage-2 Lambda invoke, which
    can wait up to its read timeout, runs in a worker thread. Under Mangum (``aws.event``
    in the scope) a container serves one request at a time, so there is nothing to
    unblock and everything runs on the event loop.

    NOTE: running the PostgreSQL audit INSERT in worker threads was measured at 431
    requests/s against 1,669 on the event loop (two uvicorn workers, concurrency 16):
    each thread waiting on the socket has to win the GIL back from CPU-bound threads.
    """
    request_id = _request_id(request)
    under_mangum = "aws.event" in request.scope
    if runtime.settings.stage2_mode is Stage2Mode.LAMBDA and not under_mangum:
        return await run_in_threadpool(_decide, runtime, transactions, request_id)
    refresh_bundle(runtime)
    service = _service(runtime)
    with _decision_errors(runtime, transactions, request_id):
        if under_mangum:
            # A container serves one request at a time, so there is nothing to group the
            # audit write with. It runs here, because the hop to the group writer's thread
            # added 0.35 ms to each warm request in the benchmarks.
            batch = service.decide(_inputs(transactions), request_id=request_id)
        else:
            batch = await service.decide_async(_inputs(transactions), request_id=request_id)
    _observe(runtime, batch)
    return batch


def _inputs(transactions: list[Transaction]) -> list[TransactionInput]:
    return [TransactionInput(t.transaction_id, t.features) for t in transactions]


@contextmanager
def _decision_errors(
    runtime: Runtime, transactions: list[Transaction], request_id: str
) -> Iterator[None]:
    """Turn an audit failure into 503 and an idempotency conflict into 409."""
    try:
        yield
    except AuditError as exc:
        logger.error("audit write failed", extra={"request_id": request_id, "error": str(exc)})
        runtime.decision_metrics.add({"AuditWriteFailures": 1})
        raise ServiceUnavailableError(
            "the decision could not be recorded in the audit trail, so it was not returned; "
            "retry the request"
        ) from exc
    except IdempotencyConflictError as exc:
        where = ""
        if len(transactions) > 1 and exc.row is not None:
            where = f" (transactions[{exc.row}])"
        raise HTTPException(409, f"{exc}{where}") from exc


def _observe(runtime: Runtime, batch: ScoredBatch) -> None:
    """Log one line per new decision and count the request's metrics.

    A repeated transaction id returns the stored decision. It is logged as a repeat and
    left out of the decision metrics, so client retries do not inflate them.
    """
    repeated = batch.repeated or (False,) * len(batch.decisions)
    new = [d for d, again in zip(batch.decisions, repeated, strict=True) if not again]
    for decision, record, again in zip(batch.decisions, batch.records, repeated, strict=True):
        message = "repeated decision returned" if again else "decision"
        logger.info(message, extra=decision_log_fields(decision, record))

    stage2 = sum(1 for d in new if d.stage == "stage2")
    counts = {
        "Decisions": len(new),
        "Stage1Decisions": len(new) - stage2,
        "Stage2Decisions": stage2,
        # Escalated: scored by stage 2, or in the band but stage 2 gave no probability.
        "Escalations": sum(1 for d in new if d.stage == "stage2" or d.degraded),
        "Stage2Errors": int(batch.stage2_error is not None),
        "DegradedDecisions": sum(1 for d in new if d.degraded),
    }
    if batch.audit_fallback is not None:
        counts["AuditWriteFailures"] = 1
        counts["AuditFallbackWrites"] = len(batch.decisions)
    runtime.decision_metrics.add(counts, stage2_latency_ms=batch.stage2_latency_ms)


def _audit_state(runtime: Runtime) -> Literal["ok", "unreachable", "disabled"]:
    if runtime.audit is None:
        return "disabled"
    return "ok" if runtime.audit.ping() else "unreachable"


def _build_router(runtime: Runtime) -> APIRouter:
    # A subclass per app, so two apps in one process keep their own body limits.
    route_class = type("AppJSONRoute", (StrictJSONRoute,),
                       {"max_body_bytes": runtime.settings.max_body_bytes})
    router = APIRouter(route_class=route_class)

    @router.post("/predict", response_model=DecisionResponse, tags=["scoring"],
                 responses=ERROR_RESPONSES)
    async def predict(transaction: Transaction, request: Request) -> dict[str, Any]:
        """Score one transaction."""
        try:
            batch = await _decide_async(runtime, [transaction], request)
        except FeatureValidationError as exc:
            raise FeatureValidationError(exc.field, exc.message) from None
        return batch.decisions[0].to_dict()

    @router.post("/predict/batch", response_model=BatchResponse, tags=["scoring"],
                 responses=ERROR_RESPONSES,
                 description=f"At most {runtime.settings.max_batch_size} transactions.")
    async def predict_batch(body: BatchRequest, request: Request) -> dict[str, Any]:
        """Score several transactions; one decision each, in request order."""
        limit = runtime.settings.max_batch_size
        if len(body.transactions) > limit:
            raise RequestValidationError([{
                "loc": ("body", "transactions"),
                "msg": f"at most {limit} transactions per batch, got {len(body.transactions)}",
                "type": "too_long",
            }])
        batch = await _decide_async(runtime, body.transactions, request)
        return {"request_id": batch.request_id, "decisions": [d.to_dict() for d in batch.decisions]}

    # HEAD is served by the same function, but only GET is listed in the OpenAPI
    # document: one route for both would give them the same operationId.
    @router.head("/health", include_in_schema=False)
    @router.get("/health", response_model=HealthResponse, tags=["operations"],
                responses={503: {"model": HealthResponse}})
    def health() -> JSONResponse:
        """Liveness and readiness: bundle loaded and audit store (or its fallback) usable."""
        service = runtime.service
        body = HealthResponse(
            status="ok",
            bundle_loaded=service is not None,
            model_version=service.bundle.version if service else None,
            audit_store=_audit_state(runtime),
            detail=runtime.load_error,
        )
        if service is not None:
            body.audit_fallback = None if service.audit_status in {"ok", "disabled"} \
                else service.audit_status
            if isinstance(service.fallback, SpoolFallback):
                body.audit_spool_pending = service.fallback.pending()
                # Checked now, so the report clears as soon as the spool is usable again,
                # without waiting for a request to write to it.
                body.audit_fallback_error = service.fallback.problem()
                if body.audit_spool_pending == 0 and body.audit_store == "ok":
                    # The spool was replayed and the database responds, so nothing waits
                    # for an operator, although no write has reached the database since.
                    body.audit_fallback = None
            else:
                body.audit_fallback_error = service.fallback_error
            body.stage2_circuit_open = bool(service.breaker and service.breaker.is_open)
        refusal = runtime.watcher.last_refusal if runtime.watcher else None
        if refusal is not None:
            body.bundle_refused = f"{refusal.location}: {refusal.reason}"

        # The SQS fallback is not probed, because that would cost an SQS call per health
        # check. Its state is the outcome of its last write, as service.fallback_error.
        fallback_usable = service is not None and service.fallback is not None \
            and body.audit_fallback_error is None
        if service is None or (body.audit_store == "unreachable" and not fallback_usable):
            body.status = "unavailable"
        elif (body.audit_store == "unreachable" or body.audit_fallback
              or body.audit_fallback_error or body.stage2_circuit_open or body.bundle_refused):
            body.status = "degraded"
        code = 503 if body.status == "unavailable" else 200
        return JSONResponse(body.model_dump(), status_code=code)

    @router.get("/metadata", response_model=MetadataResponse, tags=["operations"])
    async def metadata() -> dict[str, Any]:
        """The served bundle's version, feature schema, band, threshold and test metrics."""
        bundle = _service(runtime).bundle
        manifest = bundle.manifest
        return {
            "model_version": bundle.version,
            "format_version": manifest["format_version"],
            "created_at": manifest["created_at"],
            "features": bundle.schema.to_list(),
            "band": bundle.band.to_dict(),
            "decision_threshold": bundle.threshold,
            "stage2_training_rows": manifest["stage2"].get("training_rows"),
            "metrics": manifest.get("metrics", {}).get("test", {}),
            "example_transaction": bundle.example_transaction,
            "max_batch_size": runtime.settings.max_batch_size,
        }

    @router.head("/", include_in_schema=False)
    @router.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        bundle = _service(runtime).bundle
        content = render_page(
            version=bundle.version, low=bundle.band.low, high=bundle.band.high,
            threshold=bundle.threshold, example=bundle.example_transaction,
        )
        return HTMLResponse(content, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    return router


def _add_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(FeatureValidationError)
    async def invalid_feature(_request: Request, exc: FeatureValidationError) -> JSONResponse:
        prefix: list[Any] = ["body"] if exc.row is None else ["body", "transactions", exc.row]
        detail = [{"loc": [*prefix, "features", exc.field], "msg": exc.message,
                   "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default handler echoes each invalid input whole; a 600 KB list or a
        # 10,000-character key would come back in the response. Keep location and message.
        detail = [
            {"loc": [_shorten(part) for part in error.get("loc", ())],
             "msg": _shorten(str(error.get("msg", ""))), "type": error.get("type", "")}
            for error in exc.errors()[:MAX_REPORTED_ERRORS]
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(ServiceUnavailableError)
    async def unavailable(_request: Request, exc: ServiceUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))


MAX_REPORTED_ERRORS = 20
MAX_ECHOED_CHARACTERS = 128


def _shorten(part: Any) -> Any:
    if isinstance(part, str) and len(part) > MAX_ECHOED_CHARACTERS:
        return part[:MAX_ECHOED_CHARACTERS] + "..."
    return part


class SecurityHeadersMiddleware:
    """Pure ASGI middleware adding SECURITY_HEADERS to every HTTP response.

    Starlette's BaseHTTPMiddleware would run each request in an extra task, which costs
    more than the scoring itself.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_security_headers(app: FastAPI) -> None:
    app.add_middleware(SecurityHeadersMiddleware)
