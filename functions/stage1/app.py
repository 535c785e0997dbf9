"""Stage-1 Lambda function: the scoring API (FastAPI), served through Mangum.

Locally the same ``app`` runs under uvicorn: ``uvicorn functions.stage1.app:app``.
The bundle and the audit connection pool are created once, when the module is imported
(the Lambda init phase), and reused by every invocation of the container.
"""

from __future__ import annotations

import gc

# Init creates about 280,000 objects that live as long as the container
# (FastAPI's and pydantic's models, the bundle, the clients). With the cyclic garbage
# collector paused until init ends and those objects frozen afterwards, the collector
# scans them neither during init nor in any later request. That took about 50 ms off the
# stage-1 cold start with .pyc on the benchmark machine (median of 9 runs, 463 ms against
# 518 to 606 ms).
gc.disable()

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from fraudscore.api.app import create_app, with_root_path
from fraudscore.observability import log_modules_as_json, logger
from fraudscore.runtime import Runtime
from fraudscore.settings import Settings

log_modules_as_json()
settings = Settings.from_env()
runtime = Runtime.start(settings)
app = create_app(runtime)

# lifespan="off": the runtime is built above, at import, so there is no startup hook
# for Mangum to run on every invocation. Mangum keeps the stage prefix in the path and
# with_root_path declares it as the ASGI root_path, so links under /docs keep it too.
_mangum = Mangum(with_root_path(app, settings.api_base_path), lifespan="off",
                 api_gateway_base_path="/")

gc.freeze()
gc.enable()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda entry point for API Gateway HTTP API (payload format 2.0) events.

    The invocation's metrics are flushed before it returns, because Lambda may freeze the
    container until the next one.
    """
    try:
        return _mangum(event, context)
    finally:
        runtime.decision_metrics.flush()
