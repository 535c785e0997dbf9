"""Stage 1 -> stage 2 through the real boto3 Lambda client, against a local Invoke endpoint.

The endpoint is :func:`fraudscore.local_lambda.serve_lambda` on 127.0.0.1. It serves the
real stage-2 logic, or test handlers that sleep, raise or return malformed bodies, and
counts the requests and invocations it receives.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config

from fraudscore import stage2_client
from fraudscore.bundle import Bundle, load_bundle, manifest_digest
from fraudscore.exceptions import Stage2Error
from fraudscore.local_lambda import LambdaInvokeServer, serve_lambda
from fraudscore.runtime import Runtime
from fraudscore.settings import Settings, Stage2Mode
from fraudscore.stage2 import BoosterScorer
from fraudscore.stage2_client import InProcessStage2, LambdaStage2
from fraudscore.stage2_service import Stage2Service
from fraudscore.storage import open_store

FUNCTION_NAME = "stage2"
# Read timeouts: generous where stage 2 should respond in time, so a loaded CI machine does
# not fail the test, and short where a handler sleeps SLEEP_SECONDS to force a timeout.
READ_TIMEOUT = 5.0
SHORT_READ_TIMEOUT = 0.5
SLEEP_SECONDS = 2.0

StartServer = Callable[..., LambdaInvokeServer]


@pytest.fixture(autouse=True)
def local_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy credentials and region, and no user AWS configuration, so boto3 stays local."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_LAMBDA", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so handlers that wait on it finish before their server stops."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def start_server(release: threading.Event) -> Iterator[StartServer]:
    """Start Invoke endpoints on free ports, and stop them all at teardown."""
    started: list[tuple[LambdaInvokeServer, threading.Thread]] = []

    def start(handler: Callable[[Any, Any], Any], **options: Any) -> LambdaInvokeServer:
        server, thread = serve_lambda(handler, port=0, function_name=FUNCTION_NAME, **options)
        started.append((server, thread))
        return server

    yield start
    release.set()
    for server, thread in started:
        if thread.is_alive():
            server.stop()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(open_store(str(bundle_dir)))


@pytest.fixture(scope="module")
def stage2_service(bundle_dir: Path) -> Stage2Service:
    service = Stage2Service.start(Settings.from_env({}, model_uri=str(bundle_dir)))
    assert service.load_error is None, service.load_error
    return service


@pytest.fixture(scope="module")
def rows(bundle: Bundle) -> np.ndarray:
    """The bundle's example transactions and 20 rows scaled from them, in schema order."""
    examples = bundle.manifest["example_transactions"]
    base = bundle.schema.validate_many(list(examples.values()))
    rng = np.random.default_rng(11)
    scaled = base[rng.integers(0, len(base), 20)] * rng.uniform(0.5, 1.5, (20, base.shape[1]))
    return np.vstack([base, scaled])


def _client(
    server: LambdaInvokeServer, name: str = FUNCTION_NAME, **options: float
) -> LambdaStage2:
    timeouts = {"connect_timeout": 1.0, "read_timeout": READ_TIMEOUT, **options}
    return LambdaStage2(name, endpoint_url=server.endpoint_url, **timeouts)


def _score_error(client: LambdaStage2, rows: np.ndarray, version: str) -> Stage2Error:
    with pytest.raises(Stage2Error) as info:
        client.score(rows, bundle_version=version, correlation_id="test-request")
    return info.value


def _serve_stage2(
    start_server: StartServer, service: Stage2Service, **options: Any
) -> LambdaInvokeServer:
    return start_server(lambda event, _context: service.handle(event), **options)


def test_lambda_scores_equal_in_process(start_server, stage2_service, bundle, rows) -> None:
    server = _serve_stage2(start_server, stage2_service)
    scorer = BoosterScorer.from_bytes(
        bundle.stage2_model, n_features=len(bundle.schema), calibration=bundle.stage2_calibration
    )
    in_process = InProcessStage2(
        bundle.stage2_model, n_features=len(bundle.schema),
        calibration=bundle.stage2_calibration, bundle_version=bundle.version,
    )

    remote = _client(server).score(rows, bundle_version=bundle.version, correlation_id="r-1")
    local = in_process.score(rows, bundle_version=bundle.version, correlation_id="r-1")

    assert remote.shape == (len(rows),)
    np.testing.assert_allclose(remote, scorer.probability(rows), rtol=0, atol=1e-9)
    np.testing.assert_allclose(remote, local, rtol=0, atol=1e-9)
    assert len(np.unique(remote)) > 1, "rows should not all score the same"
    assert server.invocations == 1


def test_timeout_is_one_invocation(start_server, stage2_service, bundle, rows) -> None:
    server = _serve_stage2(start_server, stage2_service, delay_seconds=SLEEP_SECONDS)

    error = _score_error(_client(server, read_timeout=SHORT_READ_TIMEOUT), rows[:1],
                         bundle.version)

    assert error.reason == "timeout"
    assert server.requests == 1, "a timed-out invoke was retried"
    assert server.invocations == 1


def test_default_boto3_client_retries_timeout(start_server, release) -> None:
    # Shows the check above can fail: with boto3's default retry settings the timed-out
    # invocation is sent again, so the function runs twice for one call.
    calls = itertools.count()

    def slow_first_call(event: Any, _context: Any) -> dict[str, bool]:
        if next(calls) == 0:
            release.wait(SLEEP_SECONDS)
        return {"ok": True}

    server = start_server(slow_first_call)
    client = boto3.client("lambda", endpoint_url=server.endpoint_url,
                          config=Config(connect_timeout=1.0, read_timeout=SLEEP_SECONDS / 2))

    response = client.invoke(FunctionName=FUNCTION_NAME, Payload=b"{}")

    assert json.loads(response["Payload"].read()) == {"ok": True}
    assert server.invocations == 2


def test_function_error(start_server, bundle, rows) -> None:
    def failing(event: Any, _context: Any) -> None:
        raise RuntimeError("model exploded")

    server = start_server(failing)

    error = _score_error(_client(server), rows[:2], bundle.version)

    assert error.reason == "function_error"
    assert "RuntimeError" in str(error)
    assert "model exploded" in str(error)
    assert server.invocations == 1


def test_function_timeout_inside_lambda(start_server, release, bundle, rows) -> None:
    # The function's own timeout is shorter than the client's read timeout, so Lambda returns
    # a Sandbox.Timedout function error.
    server = start_server(lambda event, _context: release.wait(SLEEP_SECONDS),
                          timeout_seconds=0.1)

    error = _score_error(_client(server, read_timeout=SLEEP_SECONDS), rows[:1], bundle.version)

    assert error.reason == "function_error"
    assert "Sandbox.Timedout" in str(error)


def test_version_mismatch_raised_by_stage2(start_server, stage2_service, rows) -> None:
    server = _serve_stage2(start_server, stage2_service)

    error = _score_error(_client(server), rows[:1], "another-bundle-version")

    assert error.reason == "version_mismatch"
    assert server.invocations == 1


def test_version_mismatch_in_response(start_server, bundle, rows) -> None:
    server = start_server(
        lambda event, _context: {"bundle_version": "older", "probabilities": [0.5]}
    )

    error = _score_error(_client(server), rows[:1], bundle.version)

    assert error.reason == "version_mismatch"


@pytest.mark.parametrize(
    ("response_body", "case"),
    [
        ("not an object", "JSON string"),
        ({"bundle_version": None}, "no probabilities"),
        ({"probabilities": [0.2, 0.3]}, "two probabilities for one row"),
        ({"probabilities": []}, "no probability for one row"),
        ({"probabilities": [1.5]}, "above 1"),
        ({"probabilities": [-0.1]}, "below 0"),
        ({"probabilities": [float("nan")]}, "NaN"),
        ({"probabilities": ["0.5"]}, "string"),
        ({"probabilities": [[0.5]]}, "nested list"),
    ],
)
def test_malformed_response(start_server, bundle, rows, response_body: Any, case: str) -> None:
    if isinstance(response_body, dict):
        response_body = {"bundle_version": bundle.version, **response_body}
    server = start_server(lambda event, _context: response_body)

    error = _score_error(_client(server), rows[:1], bundle.version)

    assert error.reason == "malformed_response", case


def test_response_not_json(bundle, rows) -> None:
    # The Python runtime always sends JSON, so a plain HTTP server sends the raw bytes.
    class RawResponse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"<html>not json</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), RawResponse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = LambdaStage2(FUNCTION_NAME, connect_timeout=1.0, read_timeout=READ_TIMEOUT,
                              endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
        error = _score_error(client, rows[:1], bundle.version)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

    assert error.reason == "malformed_response"


def test_throttled(start_server, stage2_service, bundle, rows) -> None:
    server = _serve_stage2(start_server, stage2_service, reserved_concurrency=0)

    error = _score_error(_client(server), rows[:1], bundle.version)

    assert error.reason == "throttled"
    assert server.requests == 1, "a throttled invoke was retried"
    assert server.invocations == 0


def test_unknown_function(start_server, stage2_service, bundle, rows) -> None:
    server = _serve_stage2(start_server, stage2_service)

    error = _score_error(_client(server, name="no-such-function"), rows[:1], bundle.version)

    assert error.reason == "invoke_failed"
    assert "ResourceNotFoundException" in str(error)
    assert server.invocations == 0


def test_function_arn_with_alias(start_server, stage2_service, bundle, rows) -> None:
    # The SAM template passes the alias ARN of the function, not its name.
    server = _serve_stage2(start_server, stage2_service)
    arn = f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION_NAME}:live"

    probabilities = _client(server, name=arn).score(
        rows[:3], bundle_version=bundle.version, correlation_id="r-2"
    )

    assert probabilities.shape == (3,)
    assert server.invocations == 1


def test_endpoint_down(bundle, rows) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    server.server_close()
    client = LambdaStage2(FUNCTION_NAME, connect_timeout=1.0, read_timeout=READ_TIMEOUT,
                          endpoint_url=url)

    error = _score_error(client, rows[:1], bundle.version)

    assert error.reason == "invoke_failed"


# End to end: the stage-1 API with STAGE2_MODE=lambda.


def _uncertain_example(bundle: Bundle) -> dict[str, float]:
    example = bundle.example_transaction
    assert example, "the bundle has no 'uncertain' example transaction"
    return example


def _confident_example(bundle: Bundle) -> dict[str, float]:
    example = bundle.manifest["example_transactions"].get("confident_genuine")
    assert example, "the bundle has no 'confident_genuine' example transaction"
    return dict(example)


def _lambda_client(make_client, server: LambdaInvokeServer, **overrides: Any):
    settings = {
        "stage2_mode": Stage2Mode.LAMBDA,
        "stage2_function_name": FUNCTION_NAME,
        "stage2_endpoint_url": server.endpoint_url,
        "stage2_read_timeout_seconds": READ_TIMEOUT,
        **overrides,
    }
    return make_client(**settings)


def test_predict_through_lambda(start_server, stage2_service, make_client, bundle) -> None:
    server = _serve_stage2(start_server, stage2_service)
    example = _uncertain_example(bundle)

    remote = _lambda_client(make_client, server).post("/predict", json={"features": example})
    local = make_client().post("/predict", json={"features": example})

    assert remote.status_code == 200, remote.text
    assert local.status_code == 200, local.text
    assert remote.json()["stage"] == "stage2"
    assert remote.json()["degraded"] is False
    assert server.invocations == 1, "stage 1 did not invoke the stage-2 endpoint"
    assert local.json()["stage"] == "stage2"
    assert remote.json()["stage2_probability"] == pytest.approx(
        local.json()["stage2_probability"], rel=0, abs=1e-9
    )
    assert remote.json()["fraud_probability"] == pytest.approx(
        local.json()["fraud_probability"], rel=0, abs=1e-9
    )


def test_predict_lambda_mode_given_as_string(
    start_server, stage2_service, make_client, bundle
) -> None:
    # Settings overrides may be given as the strings the environment would hold.
    server = _serve_stage2(start_server, stage2_service)
    client = make_client(stage2_mode="lambda", stage2_function_name=FUNCTION_NAME,
                         stage2_endpoint_url=server.endpoint_url)

    response = client.post("/predict", json={"features": _uncertain_example(bundle)})

    assert response.status_code == 200, response.text
    assert response.json()["stage"] == "stage2"
    assert server.invocations == 1, "stage 1 scored in process instead of invoking stage 2"


def _failing(_event: Any, _context: Any) -> None:
    raise RuntimeError("stage 2 is broken")


@pytest.mark.parametrize(
    ("failure", "reason"),
    [("raise", "function_error"), ("sleep", "timeout"), ("throttle", "throttled"),
     ("stopped", "invoke_failed"), ("nested", "malformed_response")],
)
def test_predict_degrades_on_stage2_failure(
    start_server, stage2_service, make_client, bundle, failure: str, reason: str
) -> None:
    overrides: dict[str, Any] = {}
    if failure == "raise":
        server = start_server(_failing)
    elif failure == "sleep":
        server = _serve_stage2(start_server, stage2_service, delay_seconds=SLEEP_SECONDS)
        overrides["stage2_read_timeout_seconds"] = SHORT_READ_TIMEOUT
    elif failure == "throttle":
        server = _serve_stage2(start_server, stage2_service, reserved_concurrency=0)
    elif failure == "nested":
        server = start_server(lambda event, _context: {
            "bundle_version": event["bundle_version"], "probabilities": [[0.5]],
        })
    else:
        server = _serve_stage2(start_server, stage2_service)
        server.stop()
    client = _lambda_client(make_client, server, **overrides)

    response = client.post("/predict", json={"features": _uncertain_example(bundle)})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["degraded"] is True
    assert body["degraded_reason"] == reason
    assert body["stage"] == "stage1"
    assert body["stage2_probability"] is None
    assert body["fraud_probability"] == body["stage1_probability"]


def test_breaker_stops_invoking(start_server, make_client, bundle) -> None:
    threshold = 3
    server = start_server(_failing)
    client = _lambda_client(make_client, server, stage2_breaker_threshold=threshold,
                            stage2_breaker_cooldown_seconds=60.0)
    payload = {"features": _uncertain_example(bundle)}

    failed = [client.post("/predict", json=payload) for _ in range(threshold)]
    invocations_when_opened = server.invocations
    skipped = [client.post("/predict", json=payload) for _ in range(3)]

    assert [r.status_code for r in failed + skipped] == [200] * (threshold + 3)
    assert [r.json()["degraded_reason"] for r in failed] == ["function_error"] * threshold
    assert invocations_when_opened == threshold
    assert [r.json()["degraded_reason"] for r in skipped] == ["circuit_open"] * 3
    assert server.invocations == threshold, "the open breaker still invoked stage 2"


# When the Lambda client is created.


def test_client_created_by_first_escalation(start_server, stage2_service, bundle, rows) -> None:
    server = _serve_stage2(start_server, stage2_service)
    client = LambdaStage2(FUNCTION_NAME, connect_timeout=1.0, read_timeout=READ_TIMEOUT,
                          endpoint_url=server.endpoint_url, create_client_at_init=False)

    created_at_init = client.client_created
    first = client.score(rows[:2], bundle_version=bundle.version, correlation_id="r-lazy-1")
    botocore_client = client.client
    second = client.score(rows[:2], bundle_version=bundle.version, correlation_id="r-lazy-2")

    assert created_at_init is False
    assert client.client_created is True
    assert client.client is botocore_client, "a second escalation created another client"
    assert first.tolist() == second.tolist()
    assert server.invocations == 2


def test_concurrent_first_escalations_create_one_client(
    start_server, stage2_service, bundle, rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _serve_stage2(start_server, stage2_service)
    created: list[Any] = []
    real = stage2_client.make_lambda_client

    def counting(**options: Any) -> Any:
        created.append(real(**options))
        return created[-1]

    monkeypatch.setattr(stage2_client, "make_lambda_client", counting)
    client = LambdaStage2(FUNCTION_NAME, connect_timeout=1.0, read_timeout=READ_TIMEOUT,
                          endpoint_url=server.endpoint_url, create_client_at_init=False)
    threads = 16
    barrier = threading.Barrier(threads)
    results: list[list[float]] = []

    def escalate(index: int) -> None:
        barrier.wait()
        results.append(client.score(rows[:1], bundle_version=bundle.version,
                                    correlation_id=f"r-race-{index}").tolist())

    workers = [threading.Thread(target=escalate, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)

    assert len(created) == 1
    assert len(results) == threads
    assert all(result == results[0] for result in results)
    assert server.invocations == threads


@pytest.mark.parametrize(
    ("initialization_type", "created_at_init"),
    [("on-demand", False), ("provisioned-concurrency", True), ("snap-start", True),
     (None, True)],
)
def test_init_type_decides_client_creation(
    start_server, stage2_service, make_client, settings_factory, bundle,
    initialization_type: str | None, created_at_init: bool,
) -> None:
    server = _serve_stage2(start_server, stage2_service)
    runtime = Runtime.start(settings_factory(
        stage2_mode=Stage2Mode.LAMBDA, stage2_function_name=FUNCTION_NAME,
        stage2_endpoint_url=server.endpoint_url, stage2_read_timeout_seconds=READ_TIMEOUT,
        aws_lambda_initialization_type=initialization_type,
    ))
    client = make_client(runtime)
    assert runtime.service is not None, runtime.load_error
    stage2 = runtime.service.stage2
    assert isinstance(stage2, LambdaStage2)
    at_init = stage2.client_created

    confident = client.post("/predict", json={"features": _confident_example(bundle)})
    after_stage1_decision = stage2.client_created
    escalated = client.post("/predict", json={"features": _uncertain_example(bundle)})

    assert at_init is created_at_init
    assert after_stage1_decision is created_at_init
    assert confident.json()["stage"] == "stage1"
    assert escalated.status_code == 200, escalated.text
    assert escalated.json()["stage"] == "stage2"
    assert escalated.json()["degraded"] is False
    assert stage2.client_created is True
    assert server.invocations == 1


def test_client_failure_gets_failure_policy(
    start_server, stage2_service, make_client, bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _serve_stage2(start_server, stage2_service)
    # Without a region botocore cannot create a Lambda client.
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    client = _lambda_client(make_client, server, aws_lambda_initialization_type="on-demand",
                            stage2_failure_policy="review")

    response = client.post("/predict", json={"features": _uncertain_example(bundle)})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["degraded"] is True
    assert body["degraded_reason"] == "client_failed"
    assert body["stage"] == "stage1"
    assert body["manual_review"] is True
    assert server.requests == 0


@pytest.mark.parametrize(
    ("endpoint_url", "reason"),
    [("127.0.0.1:3201", "client_failed"), ("http://127.0.0.1:abc", "invoke_failed"),
     ("http://[::1", "client_failed")],
)
def test_unusable_endpoint_url_is_a_stage2_error(
    bundle, rows, endpoint_url: str, reason: str
) -> None:
    client = LambdaStage2(FUNCTION_NAME, connect_timeout=1.0, read_timeout=READ_TIMEOUT,
                          endpoint_url=endpoint_url, create_client_at_init=False)

    error = _score_error(client, rows[:1], bundle.version)

    assert error.reason == reason


def test_client_failure_at_init_degrades(
    start_server, stage2_service, make_client, bundle, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = _serve_stage2(start_server, stage2_service)
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    with caplog.at_level(logging.ERROR, logger="fraudscore.stage2_client"):
        client = _lambda_client(make_client, server)

    confident = client.post("/predict", json={"features": _confident_example(bundle)})
    escalated = client.post("/predict", json={"features": _uncertain_example(bundle)})

    assert "could not be created" in caplog.text
    assert confident.status_code == 200, confident.text
    assert confident.json()["stage"] == "stage1"
    assert escalated.status_code == 200, escalated.text
    assert escalated.json()["degraded_reason"] == "client_failed"
    assert server.requests == 0


def test_bundle_refresh_keeps_the_lambda_client(
    start_server, stage2_service, make_client, bundle, bundle_dir: Path, tmp_path: Path
) -> None:
    server = _serve_stage2(start_server, stage2_service)
    live = tmp_path / "live"
    shutil.copytree(bundle_dir, live)
    client = _lambda_client(make_client, server, model_uri=str(live),
                            bundle_refresh_seconds=0.01)
    runtime = client.app.state.runtime
    before = runtime.service.stage2
    client.post("/predict", json={"features": _uncertain_example(bundle)})

    manifest = json.loads((live / "manifest.json").read_text())
    manifest["bundle_version"] = "next-version"
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (live / "manifest.json").write_text(json.dumps(manifest))
    time.sleep(0.05)
    response = client.post("/predict", json={"features": _uncertain_example(bundle)})

    assert response.json()["model_version"] == "next-version"
    assert runtime.service.stage2 is before
    assert before.client_created is True
