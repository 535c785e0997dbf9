"""``python -m fraudscore.local_twin`` as a process: stage 1 reaches stage 2 over the Lambda API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.ports import free_port

STARTUP_TIMEOUT_SECONDS = 90.0


def _twin_environment() -> dict[str, str]:
    """The test process's environment without AWS settings, which the twin must fill in."""
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("AWS_")}
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


def _get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _post_json(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _wait_for_health(url: str, process: subprocess.Popen[bytes], log: Path) -> Any:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"local twin exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            status, body = _get_json(url)
        except OSError:
            time.sleep(0.2)
            continue
        if status == 200:
            return body
        pytest.fail(f"/health answered {status}: {body}")
    pytest.fail(f"local twin not healthy after {STARTUP_TIMEOUT_SECONDS} s:\n"
                f"{log.read_text()[-3000:]}")


@pytest.fixture
def twin(bundle_dir: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A running local twin on free ports, with a fresh SQLite audit database."""
    database_url = f"sqlite:///{tmp_path / 'audit.db'}"
    environment = _twin_environment()
    subprocess.run(
        [sys.executable, "-m", "fraudscore.audit_schema", "--database-url", database_url],
        check=True, env=environment, cwd=tmp_path, capture_output=True, timeout=60,
    )
    port, lambda_port = free_port(), free_port()
    log = tmp_path / "twin.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "fraudscore.local_twin", "--port", str(port),
             "--lambda-port", str(lambda_port), "--database-url", database_url],
            env={**environment, "MODEL_URI": str(bundle_dir)},
            cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        health = _wait_for_health(f"{base_url}/health", process, log)
        yield {"url": base_url, "lambda_url": f"http://127.0.0.1:{lambda_port}",
               "health": health, "process": process, "log": log}
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.slow
def test_twin_escalates_through_lambda_api(twin, bundle_dir: Path, make_client) -> None:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    example = manifest["example_transactions"]["uncertain"]
    log: Path = twin["log"]
    invocations_before = log.read_text().count("stage2 request")

    status, body = _post_json(f"{twin['url']}/predict", {"features": example})
    expected = make_client().post("/predict", json={"features": example}).json()
    time.sleep(0.2)  # the stage-2 process logs the invocation after sending its response
    invocations_after = log.read_text().count("stage2 request")

    assert twin["health"]["model_version"] == manifest["bundle_version"]
    assert status == 200, body
    assert body["stage"] == "stage2"
    assert body["degraded"] is False
    assert body["stage2_probability"] == pytest.approx(expected["stage2_probability"],
                                                       rel=0, abs=1e-9)
    assert invocations_after == invocations_before + 1, "stage 1 did not invoke the endpoint"


@pytest.mark.slow
def test_twin_serves_lambda_invoke_api(twin, bundle_dir: Path, monkeypatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    row = [manifest["example_transactions"]["uncertain"][feature["name"]]
           for feature in manifest["features"]]
    client = boto3.client("lambda", endpoint_url=twin["lambda_url"],
                          config=Config(retries={"total_max_attempts": 1}, read_timeout=10))
    event = {"bundle_version": manifest["bundle_version"], "correlation_id": "twin-test",
             "features": [row]}

    response = client.invoke(FunctionName="stage2", Payload=json.dumps(event).encode())
    mismatch = client.invoke(FunctionName="stage2",
                             Payload=json.dumps({**event, "bundle_version": "other"}).encode())

    assert "FunctionError" not in response
    body = json.loads(response["Payload"].read())
    assert body["bundle_version"] == manifest["bundle_version"]
    assert len(body["probabilities"]) == 1
    assert 0.0 <= body["probabilities"][0] <= 1.0
    assert mismatch["FunctionError"] == "Unhandled"
    assert json.loads(mismatch["Payload"].read())["errorType"] == "Stage2VersionMismatchError"


@pytest.mark.slow
def test_twin_stops_on_sigterm(twin) -> None:
    process: subprocess.Popen[bytes] = twin["process"]

    process.terminate()
    returncode = process.wait(timeout=20)

    assert returncode == 0, twin["log"].read_text()[-3000:]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(twin["lambda_url"].rsplit(":", 1)[1])),
                                 timeout=2).close()
