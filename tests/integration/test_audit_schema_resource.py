"""The CloudFormation custom resource that creates the audit table responds to CloudFormation."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from tests.lambda_events import FakeLambdaContext, load_function_module


@pytest.fixture
def response_url():  # type: ignore[no-untyped-def]
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/response", received
    server.shutdown()


def _event(request_type: str, url: str) -> dict:
    return {"RequestType": request_type, "ResponseURL": url,
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/fraud/1",
            "RequestId": "req-1", "LogicalResourceId": "AuditSchema",
            "ResourceType": "Custom::AuditSchema"}


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_create_and_update_make_table(  # type: ignore[no-untyped-def]
    response_url, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request_type: str
) -> None:
    url, received = response_url
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("DATABASE_URL", database)
    module = load_function_module("functions/audit_schema/handler.py")

    module.handler(_event(request_type, url), FakeLambdaContext(function_name="schema"))
    module.handler(_event(request_type, url), FakeLambdaContext(function_name="schema"))

    assert [r["Status"] for r in received] == ["SUCCESS", "SUCCESS"]
    assert received[0]["PhysicalResourceId"] == received[1]["PhysicalResourceId"]
    assert "audit_decisions" in inspect(create_engine(database)).get_table_names()


def test_delete_leaves_table(response_url, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    url, received = response_url
    database = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("DATABASE_URL", database)
    module = load_function_module("functions/audit_schema/handler.py")
    module.handler(_event("Create", url), FakeLambdaContext())

    module.handler(_event("Delete", url), FakeLambdaContext())

    assert received[-1]["Status"] == "SUCCESS"
    assert "audit_decisions" in inspect(create_engine(database)).get_table_names()


def test_unreachable_database_reports_failure(  # type: ignore[no-untyped-def]
    response_url, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received = response_url
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://app@127.0.0.1:1/fraud")
    monkeypatch.setenv("DATABASE_CONNECT_TIMEOUT_SECONDS", "0.5")
    module = load_function_module("functions/audit_schema/handler.py")
    monkeypatch.setattr(module, "RETRY_PAUSE_SECONDS", 0.1)
    monkeypatch.setattr(module, "CONNECT_DEADLINE_SECONDS", 0.5)

    module.handler(_event("Create", url), FakeLambdaContext())

    assert received[-1]["Status"] == "FAILED"
    assert "OperationalError" in received[-1]["Reason"] or "Error" in received[-1]["Reason"]
