"""Per-process runtime: settings, the loaded bundle, stage-2 client and audit store.

Built once per process (one Lambda container or one uvicorn worker) and reused by
every request, so no connection pool, client or model is created per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fraudscore.audit import AuditStore
from fraudscore.audit_fallback import AuditFallback, SpoolFallback, SqsFallback
from fraudscore.breaker import CircuitBreaker
from fraudscore.bundle import Bundle, load_bundle
from fraudscore.bundle_refresh import BundleWatcher
from fraudscore.database import open_audit_database
from fraudscore.decision_metrics import DecisionMetrics
from fraudscore.exceptions import FraudScoreError
from fraudscore.service import DecisionService
from fraudscore.settings import Settings, Stage2Mode
from fraudscore.stage2_client import InProcessStage2, LambdaStage2, Stage2Client
from fraudscore.storage import open_store

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Objects a serving process keeps; ``load_error`` is set when the bundle failed to load."""

    settings: Settings
    service: DecisionService | None = None
    audit: AuditStore | None = None
    load_error: str | None = None
    watcher: BundleWatcher | None = None
    decision_metrics: DecisionMetrics = field(default_factory=DecisionMetrics)

    @property
    def bundle(self) -> Bundle | None:
        return self.service.bundle if self.service else None

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        s3_client: Any = None,
        secrets_client: Any = None,
        stage2: Stage2Client | None = None,
    ) -> Runtime:
        """Load the bundle and connect the audit store; errors are kept, not raised.

        A runtime whose bundle failed to load returns 503 to scoring requests and
        reports the error on ``/health``, instead of crashing the process.
        """
        runtime = cls(settings=settings)
        try:
            if settings.audit_enabled:
                runtime.audit = AuditStore(open_audit_database(settings, secrets_client))
            bundle = load_bundle(open_store(settings.model_uri, s3_client=s3_client))
            runtime.service = DecisionService(
                bundle,
                stage2 or make_stage2_client(settings, bundle),
                runtime.audit,
                failure_policy=settings.stage2_failure_policy,
                breaker=CircuitBreaker(
                    settings.stage2_breaker_threshold, settings.stage2_breaker_cooldown_seconds
                ),
                fallback=make_audit_fallback(settings) if runtime.audit else None,
            )
            runtime.watcher = BundleWatcher(
                settings.model_uri, settings.bundle_refresh_seconds, s3_client=s3_client
            )
        except FraudScoreError as exc:
            runtime.load_error = str(exc)
            logger.error("serving runtime failed to start: %s", exc)
        return runtime


def refresh_bundle(runtime: Runtime) -> None:
    """Swap in a newly published bundle when the watcher finds a valid one (cheap otherwise)."""
    service, watcher = runtime.service, runtime.watcher
    if service is None or watcher is None:
        return
    replacement = watcher.poll(service.bundle)
    if replacement is None:
        return
    # A Lambda stage 2 does not depend on the bundle, so its client is kept.
    stage2 = service.stage2 if isinstance(service.stage2, LambdaStage2) \
        else make_stage2_client(runtime.settings, replacement)
    runtime.service = DecisionService(
        replacement,
        stage2,
        service.audit,
        failure_policy=service.failure_policy,
        breaker=service.breaker,
        fallback=service.fallback,
    )


def make_audit_fallback(settings: Settings) -> AuditFallback:
    """Create the SQS fallback when ``AUDIT_FALLBACK_QUEUE_URL`` is set, else the spool file."""
    if settings.audit_fallback_queue_url:
        return SqsFallback(settings.audit_fallback_queue_url)
    return SpoolFallback(settings.audit_spool_path)


def make_stage2_client(settings: Settings, bundle: Bundle) -> Stage2Client:
    """Create the stage-2 client that ``STAGE2_MODE`` selects."""
    if settings.stage2_mode is Stage2Mode.LAMBDA:
        assert settings.stage2_function_name is not None  # checked by Settings.validate
        return LambdaStage2(
            settings.stage2_function_name,
            connect_timeout=settings.stage2_connect_timeout_seconds,
            read_timeout=settings.stage2_read_timeout_seconds,
            endpoint_url=settings.stage2_endpoint_url,
            create_client_at_init=not settings.on_demand_lambda_init,
        )
    client = InProcessStage2(
        bundle.stage2_model,
        n_features=len(bundle.schema),
        calibration=bundle.stage2_calibration,
        bundle_version=bundle.version,
    )
    # Loading took 0.75 s on the benchmark machine, mostly the xgboost import. Done here,
    # a uvicorn worker does it before it reports ready instead of blocking its event loop
    # on the first escalated request. A failure is raised again by each escalation, which then gets
    # the stage-2 failure policy, so the process still serves stage-1 decisions.
    try:
        client.load()
    except (ImportError, ValueError) as exc:
        logger.error("stage-2 model of bundle %s failed to load: %s", bundle.version, exc)
    return client
