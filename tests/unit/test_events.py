"""The sample events in events/, sent through the Lambda handlers of both functions.

Each handler module reads its settings when it is imported, so it is loaded by path under
a unique module name after the environment is set, and removed from ``sys.modules``
afterwards.
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import io
import json
import logging
import math
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fraudscore.audit import create_schema
from fraudscore.bundle import Bundle, load_bundle
from fraudscore.observability import PACKAGE_LOGGER, logger
from fraudscore.settings import Env, Settings, Stage2Mode
from fraudscore.stage2_service import Stage2VersionMismatchError
from fraudscore.storage import DirectoryStore
from tests.cloudformation import load_template
from training.columns import DEFAULT_FEATURES

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
TEMPLATE_PATH = ROOT / "template.yaml"
STAGE = "v1"

# Status code each API event gets from a ready service.
API_EVENTS = {
    "predict_confident.json": 200,
    "predict_uncertain.json": 200,
    "predict_invalid.json": 422,
    "predict_batch.json": 200,
    "health.json": 200,
    "metadata.json": 200,
    "page.json": 200,
    "docs.json": 200,
    "openapi.json": 200,
}
NON_API_FILES = {"stage2_invoke.json", "env.json"}
FUNCTIONS = ("Stage1Function", "Stage2Function")
# sam local ignores variables that template.yaml does not declare for the function.
UNDECLARED_IN_TEMPLATE = {"STAGE2_ENDPOINT_URL"}


@dataclass
class FakeLambdaContext:
    """The attributes of the Lambda context object that Powertools and Mangum read."""

    function_name: str = "Stage1Function"
    function_version: str = "$LATEST"
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:123456789012:function:Stage1Function:live"
    )
    memory_limit_in_mb: int = 1024
    aws_request_id: str = "5f0a7e3c-2d4b-4c89-9a51-7b1e6f0d3c21"
    log_group_name: str = "/aws/lambda/Stage1Function"
    log_stream_name: str = "2025/05/23/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


def _load_module_by_path(path: Path) -> ModuleType:
    name = f"handler_under_test_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _clean_environment(patch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for item in fields(Settings):
        patch.delenv(item.name.upper(), raising=False)
    for name, value in values.items():
        patch.setenv(name, value)


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    return load_bundle(DirectoryStore(bundle_dir))


@pytest.fixture(scope="module")
def stage1(bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """functions/stage1/app.py imported with a local bundle and a SQLite audit database."""
    database_url = f"sqlite:///{tmp_path_factory.mktemp('events') / 'audit.db'}"
    create_schema(database_url)

    with pytest.MonkeyPatch.context() as patch:
        _clean_environment(patch, {
            Env.MODEL_URI: str(bundle_dir),
            Env.DATABASE_URL: database_url,
            Env.API_BASE_PATH: STAGE,
            Env.AUDIT_ENABLED: "true",
            Env.STAGE2_MODE: "inprocess",
        })
        module = _load_module_by_path(ROOT / "functions" / "stage1" / "app.py")
    yield module

    if module.runtime.audit is not None:
        module.runtime.audit.close()
    del sys.modules[module.__name__]
    gc.unfreeze()


@pytest.fixture(scope="module")
def stage2(bundle_dir: Path) -> Iterator[ModuleType]:
    """functions/stage2/handler.py imported with a local bundle."""
    with pytest.MonkeyPatch.context() as patch:
        _clean_environment(patch, {Env.MODEL_URI: str(bundle_dir)})
        module = _load_module_by_path(ROOT / "functions" / "stage2" / "handler.py")
    yield module
    del sys.modules[module.__name__]
    gc.unfreeze()


def _event(name: str) -> dict[str, Any]:
    return dict(json.loads((EVENTS / name).read_text()))


def _body(event: dict[str, Any]) -> Any:
    return json.loads(event["body"])


def _with_body(event: dict[str, Any], body: Any) -> dict[str, Any]:
    """Return a copy of ``event`` with another JSON body and a matching content-length."""
    changed = copy.deepcopy(event)
    changed["body"] = json.dumps(body)
    changed["headers"]["content-length"] = str(len(changed["body"].encode("utf-8")))
    return changed


def _with_path(event: dict[str, Any], path: str) -> dict[str, Any]:
    changed = copy.deepcopy(event)
    changed["rawPath"] = path
    changed["requestContext"]["http"]["path"] = path
    return changed


def _invoke(stage1: ModuleType, event: dict[str, Any]) -> dict[str, Any]:
    response = stage1.handler(event, FakeLambdaContext())
    assert isinstance(response, dict)
    return response


def _json(response: dict[str, Any]) -> Any:
    assert response["headers"]["content-type"].startswith("application/json")
    assert response["isBase64Encoded"] is False
    return json.loads(response["body"])


def _examples(bundle: Bundle) -> dict[str, dict[str, float]]:
    return dict(bundle.manifest["example_transactions"])


def _assert_decision(decision: dict[str, Any], bundle: Bundle, transaction_id: str) -> None:
    assert decision["transaction_id"] == transaction_id
    assert decision["model_version"] == bundle.version
    assert decision["stage"] in {"stage1", "stage2"}
    assert 0.0 <= decision["fraud_probability"] <= 1.0
    assert 0.0 <= decision["stage1_probability"] <= 1.0
    assert isinstance(decision["is_fraud"], bool)
    assert decision["is_fraud"] == (decision["fraud_probability"] >= bundle.threshold)
    assert decision["degraded"] is False




@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _template_routes(template: dict[str, Any]) -> set[tuple[str, str]]:
    paths = template["Resources"]["ScoringApi"]["Properties"]["DefinitionBody"]["paths"]
    return {(method.upper(), path) for path, item in paths.items() for method in item}


def _declared_variables(template: dict[str, Any], function: str) -> set[str]:
    shared = template["Globals"]["Function"].get("Environment", {}).get("Variables", {})
    own = template["Resources"][function]["Properties"].get("Environment", {})
    return set(shared) | set(own.get("Variables", {}))


# --------------------------------------------------------------------------- event files


def test_events_folder_lists_every_file() -> None:
    present = {path.name for path in EVENTS.glob("*.json")}

    assert present == set(API_EVENTS) | NON_API_FILES


@pytest.mark.parametrize("name", sorted(API_EVENTS))
def test_api_event_shape(name: str) -> None:
    event = _event(name)
    context = event["requestContext"]
    method, route = event["routeKey"].split(" ", 1)

    assert event["version"] == "2.0"
    assert event["isBase64Encoded"] is False
    assert context["stage"] == STAGE
    assert context["routeKey"] == event["routeKey"]
    assert context["http"]["method"] == method
    assert context["http"]["path"] == event["rawPath"]
    assert event["rawPath"] == f"/{STAGE}{route}"
    assert context["http"]["sourceIp"]
    assert context["requestId"]
    assert event["headers"]["host"] == context["domainName"]
    if method == "POST":
        assert isinstance(event["body"], str)
        assert event["headers"]["content-type"] == "application/json"
        assert event["headers"]["content-length"] == str(len(event["body"].encode("utf-8")))
    else:
        assert "body" not in event


def test_events_cover_template_routes(template: dict[str, Any]) -> None:
    covered = {tuple(_event(name)["routeKey"].split(" ", 1)) for name in API_EVENTS}

    assert covered == _template_routes(template)


@pytest.mark.parametrize("name", ["predict_confident.json", "predict_uncertain.json"])
def test_predict_event_features_complete(name: str) -> None:
    features = _body(_event(name))["features"]

    assert list(features) == list(DEFAULT_FEATURES)
    assert all(isinstance(value, float) and math.isfinite(value) for value in features.values())


# --------------------------------------------------------------------------- stage 1


@pytest.mark.parametrize(("name", "status"), sorted(API_EVENTS.items()))
def test_api_event_status(stage1: ModuleType, name: str, status: int) -> None:
    response = _invoke(stage1, _event(name))

    assert response["statusCode"] == status, response["body"]
    assert response["headers"]["x-content-type-options"] == "nosniff"
    assert response["headers"]["cache-control"] == "no-store"


def test_predict_confident_event(stage1: ModuleType, bundle: Bundle) -> None:
    event = _event("predict_confident.json")
    body = _body(event)
    # A new transaction id: the audit trail rejects an id reused with other features.
    routed = _with_body(event, {"transaction_id": f"{body['transaction_id']}-example",
                                 "features": _examples(bundle)["confident_genuine"]})

    as_sent = _invoke(stage1, event)
    with_example = _invoke(stage1, routed)

    assert as_sent["statusCode"] == 200
    _assert_decision(_json(as_sent), bundle, body["transaction_id"])
    assert with_example["statusCode"] == 200
    decision = _json(with_example)
    assert decision["stage"] == "stage1"
    assert decision["stage2_probability"] is None
    assert decision["fraud_probability"] == decision["stage1_probability"]
    assert decision["fraud_probability"] < bundle.band.low


def test_predict_uncertain_event(stage1: ModuleType, bundle: Bundle) -> None:
    event = _event("predict_uncertain.json")
    body = _body(event)
    # A new transaction id: the audit trail rejects an id reused with other features.
    routed = _with_body(event, {"transaction_id": f"{body['transaction_id']}-example",
                                 "features": _examples(bundle)["uncertain"]})

    as_sent = _invoke(stage1, event)
    with_example = _invoke(stage1, routed)

    assert as_sent["statusCode"] == 200
    _assert_decision(_json(as_sent), bundle, body["transaction_id"])
    assert with_example["statusCode"] == 200
    decision = _json(with_example)
    assert decision["stage"] == "stage2"
    assert decision["stage2_probability"] is not None
    assert decision["fraud_probability"] == decision["stage2_probability"]
    assert bundle.band.low <= decision["stage1_probability"] < bundle.band.high


@pytest.mark.parametrize(("path", "attribute"), [
    ("functions/stage1/app.py", "runtime"),
    ("functions/stage2/handler.py", "service"),
])
def test_init_freezes_its_objects(bundle_dir: Path, path: str, attribute: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        _clean_environment(patch, {Env.MODEL_URI: str(bundle_dir),
                                   Env.STAGE2_MODE: "inprocess", Env.AUDIT_ENABLED: "false"})
        gc.unfreeze()
        module = _load_module_by_path(ROOT / path)
    try:
        built = getattr(module, attribute)

        assert gc.isenabled()
        assert gc.get_freeze_count() > 10_000
        # Frozen objects are in no generation that a collection scans.
        assert all(tracked is not built for tracked in gc.get_objects())
    finally:
        del sys.modules[module.__name__]
        gc.unfreeze()


@pytest.mark.parametrize("path", [
    "functions/stage1/app.py",
    "functions/stage2/handler.py",
    "functions/audit_replay/handler.py",
    "functions/audit_schema/handler.py",
])
def test_module_logs_are_json_lines(bundle_dir: Path, path: str) -> None:
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler):
                patch.setattr(handler, "stream", stream)
        _clean_environment(patch, {Env.MODEL_URI: str(bundle_dir),
                                   Env.STAGE2_MODE: "inprocess", Env.AUDIT_ENABLED: "false"})
        module = _load_module_by_path(ROOT / path)
        try:
            logging.getLogger("fraudscore.audit_fallback").warning("spool %s unwritable", "x")
        finally:
            del sys.modules[module.__name__]
            gc.unfreeze()

    lines = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert lines[-1]["message"] == "spool x unwritable"
    assert lines[-1]["name"] == "fraudscore.audit_fallback"
    assert lines[-1]["level"] == "WARNING"
    assert not logging.getLogger(PACKAGE_LOGGER).propagate


def test_each_invocation_flushes_its_metrics(
    stage1: ModuleType, bundle: Bundle, capsys: pytest.CaptureFixture[str]
) -> None:
    event = _event("predict_confident.json")
    capsys.readouterr()

    for i in range(2):
        body = {"transaction_id": f"flush-{uuid.uuid4().hex}-{i}",
                "features": _examples(bundle)["uncertain"]}
        assert _invoke(stage1, _with_body(event, body))["statusCode"] == 200
        emf = [json.loads(line) for line in capsys.readouterr().out.splitlines()
               if '"_aws"' in line]

        # One EMF record per invocation, written before the handler returned.
        assert len(emf) == 1
        assert emf[0]["Decisions"] == [1.0]
        assert emf[0]["Stage2Decisions"] == [1.0]
        assert len(emf[0]["Stage2Latency"]) == 1


def test_predict_invalid_event(stage1: ModuleType) -> None:
    response = _invoke(stage1, _event("predict_invalid.json"))

    assert response["statusCode"] == 422
    detail = _json(response)["detail"]
    assert detail[0]["loc"] == ["body", "features", "TX_AMOUNT"]
    assert "finite" in detail[0]["msg"]


def test_predict_batch_event(stage1: ModuleType, bundle: Bundle) -> None:
    event = _event("predict_batch.json")
    body = _body(event)
    examples = _examples(bundle)
    kinds = ["confident_genuine", "uncertain", "confident_fraud"]
    expected_stages = {"confident_genuine": "stage1", "uncertain": "stage2",
                       "confident_fraud": "stage1"}
    transactions = [
        {"transaction_id": f"{transaction['transaction_id']}-example",
         "features": examples[kind]}
        for transaction, kind in zip(body["transactions"], kinds, strict=True)
        if kind in examples
    ]

    as_sent = _json(_invoke(stage1, event))
    with_examples = _json(_invoke(stage1, _with_body(event, {"transactions": transactions})))

    ids = [transaction["transaction_id"] for transaction in body["transactions"]]
    assert as_sent["request_id"]
    assert [decision["transaction_id"] for decision in as_sent["decisions"]] == ids
    for decision, transaction_id in zip(as_sent["decisions"], ids, strict=True):
        _assert_decision(decision, bundle, transaction_id)
    stages = [decision["stage"] for decision in with_examples["decisions"]]
    assert stages == [expected_stages[kind] for kind in kinds if kind in examples]


def test_batch_request_id_from_event(stage1: ModuleType) -> None:
    event = _event("predict_batch.json")

    body = _json(_invoke(stage1, event))

    assert body["request_id"] == event["requestContext"]["requestId"]


def test_health_event(stage1: ModuleType, bundle: Bundle) -> None:
    body = _json(_invoke(stage1, _event("health.json")))

    assert body["status"] == "ok"
    assert body["bundle_loaded"] is True
    assert body["model_version"] == bundle.version
    assert body["audit_store"] == "ok"


def test_metadata_event(stage1: ModuleType, bundle: Bundle) -> None:
    body = _json(_invoke(stage1, _event("metadata.json")))

    assert body["model_version"] == bundle.version
    assert [feature["name"] for feature in body["features"]] == list(DEFAULT_FEATURES)
    assert body["band"] == {"low": bundle.band.low, "high": bundle.band.high}
    assert body["decision_threshold"] == bundle.threshold


def test_page_event(stage1: ModuleType, bundle: Bundle) -> None:
    response = _invoke(stage1, _event("page.json"))

    assert response["headers"]["content-type"].startswith("text/html")
    assert "script-src" in response["headers"]["content-security-policy"]
    assert "<textarea" in response["body"]
    assert bundle.version in response["body"]


def test_docs_event(stage1: ModuleType) -> None:
    response = _invoke(stage1, _event("docs.json"))

    assert response["headers"]["content-type"].startswith("text/html")
    assert "swagger-ui" in response["body"]


def test_openapi_event(stage1: ModuleType) -> None:
    body = _json(_invoke(stage1, _event("openapi.json")))

    assert body["openapi"].startswith("3.")
    assert {"/predict", "/predict/batch", "/health", "/metadata"} <= set(body["paths"])


@pytest.mark.parametrize("path", [f"/{STAGE}/health", "/health"])
def test_path_with_or_without_stage(stage1: ModuleType, path: str) -> None:
    response = _invoke(stage1, _with_path(_event("health.json"), path))

    assert response["statusCode"] == 200
    assert _json(response)["status"] == "ok"


def test_unknown_path_under_stage(stage1: ModuleType) -> None:
    response = _invoke(stage1, _with_path(_event("health.json"), f"/{STAGE}/no-such-route"))

    assert response["statusCode"] == 404
    assert _json(response)["detail"] == "Not Found"


def test_docs_page_links_openapi_under_stage(stage1: ModuleType) -> None:
    response = _invoke(stage1, _event("docs.json"))

    assert f"'/{STAGE}/openapi.json'" in response["body"]


def test_stage_root_without_slash(stage1: ModuleType) -> None:
    response = _invoke(stage1, _with_path(_event("page.json"), f"/{STAGE}"))

    if response["statusCode"] in {301, 302, 307, 308}:
        assert response["headers"]["location"].endswith(f"/{STAGE}/")
    else:
        assert response["statusCode"] == 200


# --------------------------------------------------------------------------- stage 2


def test_stage2_invoke_event(stage2: ModuleType, bundle: Bundle) -> None:
    event = _event("stage2_invoke.json")
    current = {**event, "bundle_version": bundle.version}

    answer = stage2.handler(current, FakeLambdaContext(function_name="Stage2Function"))

    assert answer["bundle_version"] == bundle.version
    assert len(answer["probabilities"]) == len(event["features"])
    assert all(0.0 <= value <= 1.0 for value in answer["probabilities"])


def test_stage2_invoke_event_shape(bundle: Bundle) -> None:
    event = _event("stage2_invoke.json")

    assert set(event) == {"bundle_version", "correlation_id", "features"}
    assert event["features"]
    for row in event["features"]:
        assert len(row) == len(bundle.schema)
        bundle.schema.validate(dict(zip(bundle.schema.names, row, strict=True)))


def test_stage2_rejects_event_version(stage2: ModuleType, bundle: Bundle) -> None:
    event = _event("stage2_invoke.json")
    assert event["bundle_version"] != bundle.version

    with pytest.raises(Stage2VersionMismatchError) as raised:
        stage2.handler(event, FakeLambdaContext(function_name="Stage2Function"))

    assert event["bundle_version"] in str(raised.value)
    assert bundle.version in str(raised.value)


# --------------------------------------------------------------------------- env.json


def test_env_file_names_functions(template: dict[str, Any]) -> None:
    env = _event("env.json")

    assert set(env) == set(FUNCTIONS)
    for function in FUNCTIONS:
        assert template["Resources"][function]["Type"] == "AWS::Serverless::Function"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_env_file_variables_known(function: str) -> None:
    variables = _event("env.json")[function]
    settings_names = {item.name.upper() for item in fields(Settings)}

    for name, value in variables.items():
        assert isinstance(value, str), name
        assert name in settings_names or name.startswith("POWERTOOLS_"), name


@pytest.mark.parametrize("function", FUNCTIONS)
def test_env_file_variables_declared(template: dict[str, Any], function: str) -> None:
    variables = set(_event("env.json")[function]) - UNDECLARED_IN_TEMPLATE

    assert variables <= _declared_variables(template, function)


def test_stage2_endpoint_declared(template: dict[str, Any]) -> None:
    assert UNDECLARED_IN_TEMPLATE <= _declared_variables(template, "Stage1Function")


def test_env_file_settings_valid() -> None:
    env = _event("env.json")

    stage1 = Settings.from_env(env["Stage1Function"])
    stage2 = Settings.from_env(env["Stage2Function"])

    assert stage1.stage2_mode is Stage2Mode.LAMBDA
    assert stage1.stage2_function_name == "Stage2Function"
    assert stage1.audit_enabled is False
    assert stage1.database_secret_arn is None
    assert stage1.api_base_path == f"/{STAGE}"
    assert stage1.model_uri.startswith("s3://")
    assert stage2.model_uri == stage1.model_uri
