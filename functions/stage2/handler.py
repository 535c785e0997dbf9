"""Stage-2 Lambda function: XGBoost probabilities for rows that stage 1 escalated.

Event and response are documented in ``fraudscore.stage2_client``. The bundle is loaded
and verified once per container, at import.
"""

from __future__ import annotations

import gc

# As in the stage-1 function: no cyclic garbage collection during init, and the objects
# that init created (numpy, XGBoost, the booster) are frozen out of later collections.
gc.disable()

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from fraudscore.observability import log_modules_as_json, logger
from fraudscore.settings import Settings
from fraudscore.stage2_service import Stage2Service

log_modules_as_json()
service = Stage2Service.start(Settings.from_env())

gc.freeze()
gc.enable()


@logger.inject_lambda_context(correlation_id_path="correlation_id")
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Score ``event["features"]`` rows; raise on invalid input or a version mismatch."""
    return service.handle(event)
