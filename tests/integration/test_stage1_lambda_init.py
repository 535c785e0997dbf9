"""What the stage-1 Lambda imports at init, by the initialization type Lambda reports.

Each case starts a fresh interpreter, as a new Lambda container would, imports
``functions/stage1/app.py`` with ``STAGE2_MODE=lambda`` and sends it a transaction that
stage 1 decides, then one that it escalates. Stage 2 is served behind a local Lambda
Invoke endpoint on 127.0.0.1, and the stage-1 function reaches it through botocore.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fraudscore.local_lambda import LambdaInvokeServer, serve_lambda
from fraudscore.settings import Env, Settings
from fraudscore.stage2_service import Stage2Service

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_NAME = "stage2"

# Runs in the child: import the handler module, then send it two requests, noting after
# each step whether botocore's client module has been imported (Powertools imports the
# botocore package itself, which is small, to tag its user agent).
_CHILD = r"""
import json, sys
from tests.lambda_events import FakeLambdaContext, http_api_event, load_function_module

examples = json.loads(sys.argv[1])
module = load_function_module("functions/stage1/app.py")
loaded = {"init": "botocore.client" in sys.modules}
answers = {}
for kind in ("confident_genuine", "uncertain"):
    response = module.handler(http_api_event("POST", "/predict", {"features": examples[kind]}),
                              FakeLambdaContext())
    answers[kind] = {"status": response["statusCode"], "body": json.loads(response["body"])}
    loaded[kind] = "botocore.client" in sys.modules
print(json.dumps({"loaded": loaded, "answers": answers}))
"""


@pytest.fixture(scope="module")
def stage2_endpoint(bundle_dir: Path) -> Iterator[LambdaInvokeServer]:
    service = Stage2Service.start(Settings.from_env({}, model_uri=str(bundle_dir)))
    assert service.load_error is None, service.load_error
    server, thread = serve_lambda(lambda event, _context: service.handle(event),
                                  function_name=FUNCTION_NAME)
    yield server
    server.stop()
    thread.join(timeout=5)


def _start_stage1(bundle_dir: Path, endpoint: LambdaInvokeServer,
                  examples: dict[str, Any], tmp_path: Path,
                  initialization_type: str | None) -> dict[str, Any]:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        Env.MODEL_URI: str(bundle_dir),
        Env.AUDIT_ENABLED: "false",
        Env.API_BASE_PATH: "/v1",
        Env.STAGE2_MODE: "lambda",
        Env.STAGE2_FUNCTION_NAME: FUNCTION_NAME,
        Env.STAGE2_ENDPOINT_URL: endpoint.endpoint_url,
        Env.STAGE2_READ_TIMEOUT_SECONDS: "10",
    }
    if initialization_type is not None:
        environment[Env.AWS_LAMBDA_INITIALIZATION_TYPE] = initialization_type
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(examples)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("initialization_type", "botocore_at_init"),
    [("on-demand", False), ("provisioned-concurrency", True), ("snap-start", True),
     (None, True)],
)
def test_botocore_client_import_by_init_type(
    bundle_dir: Path, examples: dict[str, dict[str, float]], stage2_endpoint: LambdaInvokeServer,
    tmp_path: Path, initialization_type: str | None, botocore_at_init: bool,
) -> None:
    invocations_before = stage2_endpoint.invocations

    result = _start_stage1(bundle_dir, stage2_endpoint, examples, tmp_path,
                           initialization_type)

    loaded, answers = result["loaded"], result["answers"]
    assert loaded["init"] is botocore_at_init
    assert loaded["confident_genuine"] is botocore_at_init
    assert loaded["uncertain"] is True
    assert answers["confident_genuine"]["status"] == 200
    assert answers["confident_genuine"]["body"]["stage"] == "stage1"
    assert answers["uncertain"]["status"] == 200
    assert answers["uncertain"]["body"]["stage"] == "stage2"
    assert answers["uncertain"]["body"]["degraded"] is False
    assert stage2_endpoint.invocations == invocations_before + 1

