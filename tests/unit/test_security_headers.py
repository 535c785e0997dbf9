"""Security headers, closed CORS, and no secrets in responses."""

from __future__ import annotations

import json
from pathlib import Path

SECRET = "pw-in-the-database-url"


def test_page_sends_security_headers(make_client) -> None:  # type: ignore[no-untyped-def]
    response = make_client().get("/")

    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'sha256-" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_page_script_matches_its_hash(make_client) -> None:  # type: ignore[no-untyped-def]
    import base64
    import hashlib
    import re

    response = make_client().get("/")
    script = re.search(r"<script>(.*?)</script>", response.text, re.S).group(1)  # type: ignore[union-attr]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()

    assert f"'sha256-{digest}'" in response.headers["content-security-policy"]


def test_cors_closed_by_default(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client()

    preflight = client.options("/predict", headers={
        "Origin": "https://attacker.example", "Access-Control-Request-Method": "POST"})
    simple = client.get("/health", headers={"Origin": "https://attacker.example"})

    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in simple.headers


def test_cors_allows_configured_origin(make_client) -> None:  # type: ignore[no-untyped-def]
    client = make_client(cors_allow_origins="https://shop.example")

    allowed = client.get("/health", headers={"Origin": "https://shop.example"})
    other = client.get("/health", headers={"Origin": "https://attacker.example"})

    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "access-control-allow-origin" not in other.headers


def test_no_secret_in_metadata_health_or_errors(make_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # A PostgreSQL URL with a password that cannot connect: the responses must not echo it.
    url = f"postgresql+pg8000://app:{SECRET}@127.0.0.1:1/fraud"
    from fraudscore.runtime import Runtime
    from fraudscore.settings import Settings

    runtime = Runtime.start(Settings.from_env(
        {}, model_uri=str(tmp_path / "missing-bundle"), database_url=url,
        audit_spool_path=str(tmp_path / "spool.jsonl"), database_connect_timeout_seconds=0.5))
    from fastapi.testclient import TestClient

    from fraudscore.api.app import create_app

    client = TestClient(create_app(runtime))
    answers = [client.get("/health"), client.get("/metadata"),
               client.post("/predict", json={"features": {}})]

    for answer in answers:
        assert SECRET not in answer.text
        assert SECRET not in json.dumps(dict(answer.headers))
    assert answers[0].status_code == 503
    runtime.audit.close()  # type: ignore[union-attr]
