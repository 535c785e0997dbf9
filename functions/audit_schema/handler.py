"""CloudFormation custom resource that creates the audit table on deploy and update.

The DDL is idempotent (CREATE ... IF NOT EXISTS), so it is safe on every update. Delete
does nothing: the audit trail outlives the stack. The database may still be starting
when the stack creates this resource, so connecting is retried for up to four minutes.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from fraudscore.audit import create_schema
from fraudscore.database import open_audit_database
from fraudscore.exceptions import DatabaseError
from fraudscore.observability import log_modules_as_json, logger
from fraudscore.settings import Settings

log_modules_as_json()

PHYSICAL_ID = "audit-schema"
CONNECT_DEADLINE_SECONDS = 240
RETRY_PAUSE_SECONDS = 10


def create_schema_with_retry(settings: Settings, deadline: float) -> None:
    """Create the schema, retrying while the database refuses connections."""
    attempt = 0
    while True:
        attempt += 1
        database = open_audit_database(settings)
        try:
            create_schema(database)
            return
        except DatabaseError as exc:
            if time.monotonic() + RETRY_PAUSE_SECONDS > deadline:
                raise
            logger.warning("audit schema attempt failed, retrying",
                           extra={"attempt": attempt, "error": str(exc)})
            time.sleep(RETRY_PAUSE_SECONDS)
        finally:
            database.close()


def send_response(event: dict[str, Any], status: str, reason: str) -> None:
    """PUT the custom resource result to the pre-signed S3 URL CloudFormation gave."""
    body = json.dumps({
        "Status": status,
        "Reason": reason[:500],
        "PhysicalResourceId": PHYSICAL_ID,
        "StackId": event["StackId"],
        "RequestId": event["RequestId"],
        "LogicalResourceId": event["LogicalResourceId"],
        "Data": {},
    }).encode("utf-8")
    request = urllib.request.Request(  # noqa: S310 - the URL is CloudFormation's https URL
        event["ResponseURL"], data=body, method="PUT",
        headers={"Content-Type": "", "Content-Length": str(len(body))},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        logger.info("sent custom resource response", extra={"status": status,
                                                             "http_status": response.status})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> None:
    """Create the audit schema on Create and Update, do nothing on Delete, and respond."""
    request_type = event.get("RequestType")
    logger.info("audit schema request", extra={"request_type": request_type})
    try:
        if request_type in {"Create", "Update"}:
            deadline = time.monotonic() + min(
                CONNECT_DEADLINE_SECONDS, context.get_remaining_time_in_millis() / 1000 - 20
            )
            create_schema_with_retry(Settings.from_env(), deadline)
        send_response(event, "SUCCESS", f"{request_type} done")
    except Exception as exc:  # every failure must reach CloudFormation, or the stack hangs
        logger.exception("audit schema request failed")
        send_response(event, "FAILED", f"{type(exc).__name__}: {exc}")
