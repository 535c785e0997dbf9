"""Builders of Lambda events and contexts for tests."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FakeLambdaContext:
    """The attributes of a Lambda context object that the handlers read."""

    function_name: str = "stage1"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:stage1"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/stage1"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def http_api_event(method: str, path: str, body: Any = None, *, stage: str = "v1",
                   headers: dict[str, str] | None = None) -> dict[str, Any]:
    """An API Gateway HTTP API event, payload format 2.0, for ``method path`` under ``stage``."""
    raw_path = f"/{stage}{path}" if stage and stage != "$default" else path
    request_id = uuid.uuid4().hex[:16]
    event_headers = {"host": "abc123.execute-api.us-east-1.amazonaws.com",
                     "user-agent": "pytest", **(headers or {})}
    if body is not None:
        event_headers.setdefault("content-type", "application/json")
    return {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": event_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": raw_path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "pytest"},
            "requestId": request_id,
            "routeKey": f"{method} {path}",
            "stage": stage,
            "time": "04/Dec/2026:20:00:00 +0000",
            "timeEpoch": 1796500800000,
        },
        "body": body if isinstance(body, str) or body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def load_function_module(relative_path: str) -> ModuleType:
    """Import a function's handler module fresh, as a new Lambda container would."""
    path = ROOT / relative_path
    name = f"handler_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
