"""Static checks of template.yaml, samconfig.toml and the Lambda requirements files.

The template is read as YAML with CloudFormation's short tags (``!Ref``, ``!Sub``...)
turned into their long form. Nothing here calls AWS or runs SAM.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cloudformation import load_template

ROOT = Path(__file__).resolve().parents[2]

STAGE1 = "Stage1Function"
STAGE2 = "Stage2Function"

# Services whose data must never be granted on Resource "*".
DATA_SERVICES = {"s3", "rds", "rds-db", "secretsmanager", "sqs", "lambda", "kms", "dynamodb"}
# Actions AWS accepts only with Resource "*".
STAR_RESOURCE_ACTIONS = {"ecr:GetAuthorizationToken"}

# Metrics the service writes in embedded metric format.
EMITTED_METRICS = {
    "Decisions", "Stage1Decisions", "Stage2Decisions", "Escalations", "Stage2Latency",
    "Stage2Errors", "DegradedDecisions", "AuditWriteFailures", "AuditFallbackWrites",
}

ROUTES = {
    ("/", "get"), ("/health", "get"), ("/docs", "get"), ("/openapi.json", "get"),
    ("/metadata", "get"), ("/predict", "post"), ("/predict/batch", "post"),
}
AUTHORIZED_ROUTES = {("/metadata", "get"), ("/predict", "post"), ("/predict/batch", "post")}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == resource_type
    }


def references(node: Any, logical_id: str) -> bool:
    """Return True if ``node`` refers to ``logical_id`` (Ref, GetAtt or Sub, at any depth)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                if value == logical_id or value.startswith(f"{logical_id}."):
                    return True
            if key == "Fn::GetAtt" and isinstance(value, list) and value[:1] == [logical_id]:
                return True
            if key == "Fn::Sub":
                text = value if isinstance(value, str) else value[0]
                if re.search(r"\$\{" + re.escape(logical_id) + r"(\.[^}]*)?\}", text):
                    return True
            if references(value, logical_id):
                return True
        return False
    if isinstance(node, list):
        return any(references(item, logical_id) for item in node)
    return False


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _branches(node: Any) -> Iterator[Any]:
    """Yield ``node``, or both branches of an ``Fn::If`` (without ``AWS::NoValue``)."""
    if isinstance(node, dict) and "Fn::If" in node:
        for branch in node["Fn::If"][1:]:
            yield from _branches(branch)
    elif node != {"Ref": "AWS::NoValue"}:
        yield node


def _document_statements(document: Any) -> Iterator[dict[str, Any]]:
    for candidate in _branches(document):
        for statement in as_list(candidate.get("Statement", [])):
            yield from _branches(statement)


def policy_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(owner, statement)`` for every policy statement in the template.

    SAM policy templates (such as ``LambdaInvokePolicy``) are yielded as a statement
    whose Action is the template's name and whose Resource is its arguments.
    """
    for name, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        kind = resource["Type"]

        if kind == "AWS::Serverless::Function":
            for policy in as_list(properties.get("Policies", [])):
                if isinstance(policy, str):
                    yield name, {"Effect": "Allow", "Action": policy, "Resource": "managed"}
                elif "Statement" in policy:
                    for statement in _document_statements(policy):
                        yield name, statement
                else:
                    for template_name, arguments in policy.items():
                        yield name, {"Effect": "Allow", "Action": template_name,
                                     "Resource": arguments}
        elif kind == "AWS::IAM::Role":
            for policy in properties.get("Policies", []):
                for statement in _document_statements(policy["PolicyDocument"]):
                    yield name, statement
        elif kind in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy",
                      "AWS::S3::BucketPolicy", "AWS::SQS::QueuePolicy"}:
            for statement in _document_statements(properties["PolicyDocument"]):
                yield name, statement


def allow_statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(owner, st) for owner, st in policy_statements(template) if st["Effect"] == "Allow"]


def function_properties(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in resources_of_type(template, "AWS::Serverless::Function").items()
    }


def requirement_names(path: Path) -> dict[str, str]:
    """Map each normalized package name in a requirements file to its version specifier."""
    names: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)", line)
        assert match, f"{path}: cannot parse requirement {raw!r}"
        names[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3).strip()
    return names


def parameter_default(template: dict[str, Any], name: str) -> Any:
    return template["Parameters"][name]["Default"]


# --------------------------------------------------------------------- stage 2 access


def test_only_stage1_role_invokes_stage2(template):
    invokers = set()
    for owner, statement in allow_statements(template):
        actions = [str(action) for action in as_list(statement["Action"])]
        invokes = any(
            action.startswith("lambda:Invoke") or action in {"lambda:*", "*"}
            or action == "LambdaInvokePolicy"
            for action in actions
        )
        if invokes and references(statement.get("Resource"), STAGE2):
            invokers.add(owner)

    assert invokers == {STAGE1}


def test_stage2_has_no_permission_or_trigger(template):
    permissions = resources_of_type(template, "AWS::Lambda::Permission")
    assert not [name for name, res in permissions.items()
                if references(res["Properties"]["FunctionName"], STAGE2)]

    stage2 = template["Resources"][STAGE2]["Properties"]
    assert "Events" not in stage2
    assert "FunctionUrlConfig" not in stage2

    mappings = resources_of_type(template, "AWS::Lambda::EventSourceMapping")
    assert not [name for name, res in mappings.items() if references(res, STAGE2)]


def test_no_api_integrates_stage2(template):
    apis = {
        **resources_of_type(template, "AWS::Serverless::HttpApi"),
        **resources_of_type(template, "AWS::Serverless::Api"),
        **resources_of_type(template, "AWS::ApiGatewayV2::Integration"),
    }
    assert apis, "template defines no API"
    assert not [name for name, res in apis.items() if references(res, STAGE2)]


def test_stage1_calls_stage2_alias(template):
    variables = template["Resources"][STAGE1]["Properties"]["Environment"]["Variables"]

    assert variables["STAGE2_MODE"] == "lambda"
    assert variables["STAGE2_FUNCTION_NAME"] == {"Ref": f"{STAGE2}.Alias"}


# --------------------------------------------------------------------- bundle bucket


def test_bundle_bucket_blocks_public_access(template):
    bucket = template["Resources"]["ModelBundleBucket"]["Properties"]
    block = bucket["PublicAccessBlockConfiguration"]

    for setting in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls",
                    "RestrictPublicBuckets"):
        assert block.get(setting) is True, setting
    assert bucket["OwnershipControls"]["Rules"][0]["ObjectOwnership"] == "BucketOwnerEnforced"


def test_bundle_bucket_versioned_and_encrypted(template):
    bucket = template["Resources"]["ModelBundleBucket"]["Properties"]
    rules = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]

    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    assert rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}


def test_bundle_bucket_policy_denies_insecure_transport(template):
    policies = [
        res["Properties"] for res in resources_of_type(template, "AWS::S3::BucketPolicy").values()
        if res["Properties"]["Bucket"] == {"Ref": "ModelBundleBucket"}
    ]
    assert len(policies) == 1

    denies = [
        st for st in policies[0]["PolicyDocument"]["Statement"]
        if st["Effect"] == "Deny"
        and st.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in {"false", False}
    ]
    assert len(denies) == 1
    assert denies[0]["Principal"] == "*"
    assert "s3:*" in as_list(denies[0]["Action"])
    resources = as_list(denies[0]["Resource"])
    assert {"Fn::GetAtt": ["ModelBundleBucket", "Arn"]} in resources
    assert {"Fn::Sub": "${ModelBundleBucket.Arn}/*"} in resources


# --------------------------------------------------------------------- IAM


def test_no_wildcard_actions_allowed(template):
    # Deny statements may use wildcards: they only narrow access (the TLS-only bucket policy).
    wildcards = [
        (owner, action)
        for owner, statement in allow_statements(template)
        for action in as_list(statement["Action"])
        if isinstance(action, str) and (action == "*" or action.endswith(":*"))
    ]
    assert wildcards == []


def test_no_wildcard_resource_on_data_services(template):
    star_statements = [
        (owner, statement) for owner, statement in allow_statements(template)
        if "*" in as_list(statement.get("Resource"))
    ]
    actions = {action for _, st in star_statements for action in as_list(st["Action"])}

    assert not {action for action in actions if action.split(":")[0] in DATA_SERVICES}
    assert actions <= STAR_RESOURCE_ACTIONS


def test_function_policies_are_inline_statements(template):
    # Managed policies and SAM policy templates hide their actions from these checks.
    for name, properties in function_properties(template).items():
        for policy in as_list(properties.get("Policies", [])):
            assert isinstance(policy, dict) and "Statement" in policy, name


# --------------------------------------------------------------------- functions


def test_functions_use_python312_with_memory_and_timeout(template):
    defaults = template["Globals"]["Function"]
    functions = function_properties(template)
    assert set(functions) >= {STAGE1, STAGE2, "AuditReplayFunction", "AuditSchemaFunction"}

    for name, properties in functions.items():
        assert properties.get("Runtime", defaults.get("Runtime")) == "python3.12", name
        assert properties.get("Architectures", defaults.get("Architectures")) == ["x86_64"], name
        assert isinstance(properties.get("MemorySize"), int), name
        assert 128 <= properties["MemorySize"] <= 10240, name
        assert isinstance(properties.get("Timeout"), int), name
        assert 1 <= properties["Timeout"] <= 900, name


def test_functions_use_shared_layer_and_alias(template):
    defaults = template["Globals"]["Function"]
    for name, properties in function_properties(template).items():
        layers = properties.get("Layers", defaults.get("Layers"))
        assert {"Ref": "SharedLayer"} in layers, name
        assert properties.get("AutoPublishAlias", defaults.get("AutoPublishAlias")) == "live", name


def test_timeouts_cover_stage2_call(template):
    parameters = template["Parameters"]
    connect_max = parameters["Stage2ConnectTimeoutSeconds"]["MaxValue"]
    read_max = parameters["Stage2ReadTimeoutSeconds"]["MaxValue"]
    stage1_timeout = template["Resources"][STAGE1]["Properties"]["Timeout"]
    stage2_timeout = template["Resources"][STAGE2]["Properties"]["Timeout"]

    # Stage 1 must outlive its slowest stage 2 call and leave time for the audit write.
    assert stage1_timeout >= connect_max + read_max + 2
    # An HTTP API waits at most 30 s for its integration.
    assert stage1_timeout < 30
    # Stage 2 must not be cut off while stage 1 still waits for it.
    assert stage2_timeout > read_max
    assert parameters["Stage2ReadTimeoutSeconds"]["Default"] < read_max + 1


def test_environment_variables_are_read_by_the_code(template):
    settings = pytest.importorskip("fraudscore.settings", reason="fraudscore is not importable")
    known = {value for key, value in vars(settings.Env).items() if not key.startswith("_")}

    sections = [template["Globals"]["Function"], *function_properties(template).values()]
    for properties in sections:
        for variable in properties.get("Environment", {}).get("Variables", {}):
            assert variable in known or variable.startswith("POWERTOOLS_"), variable


def test_functions_log_to_retained_groups(template):
    log_groups = resources_of_type(template, "AWS::Logs::LogGroup")
    for name, group in log_groups.items():
        assert "RetentionInDays" in group["Properties"], name

    for name, properties in function_properties(template).items():
        target = properties["LoggingConfig"]["LogGroup"]
        assert target["Ref"] in log_groups, name


# --------------------------------------------------------------------- requirements


def test_stage2_requirements_use_xgboost_cpu():
    names = requirement_names(ROOT / "functions/stage2/requirements.txt")

    assert "xgboost-cpu" in names
    assert "xgboost" not in names


def test_stage1_requirements_exclude_training_libraries():
    names = requirement_names(ROOT / "functions/stage1/requirements.txt")

    for heavy in ("scikit-learn", "sklearn", "pandas", "xgboost", "xgboost-cpu", "scipy"):
        assert heavy not in names, heavy


def test_numpy_pinned_once_per_package():
    stage1 = requirement_names(ROOT / "functions/stage1/requirements.txt")
    stage2 = requirement_names(ROOT / "functions/stage2/requirements.txt")
    layer = requirement_names(ROOT / "layers/shared/requirements.txt")

    # A numpy in the layer as well as in stage 2 would ship twice and break 250 MiB.
    assert "numpy" not in layer
    assert stage1["numpy"].startswith("==")
    assert stage1["numpy"] == stage2["numpy"]


def test_runtime_provided_packages_not_bundled():
    paths = [
        *ROOT.glob("functions/*/requirements.txt"),
        ROOT / "layers/shared/requirements.txt",
    ]
    assert len(paths) >= 5
    for path in paths:
        names = requirement_names(path)
        assert "boto3" not in names, path
        assert "botocore" not in names, path


def test_layer_keeps_botocore_compatible_dateutil():
    # Layer packages are imported ahead of the runtime's, and the runtime's botocore
    # requires python-dateutil<3.
    layer = requirement_names(ROOT / "layers/shared/requirements.txt")
    pin = layer["python-dateutil"]

    assert pin.startswith("==2."), pin


# --------------------------------------------------------------------- API


def _api_operations(template: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    body = template["Resources"]["ScoringApi"]["Properties"]["DefinitionBody"]
    return {
        (path, method): operation
        for path, methods in body["paths"].items()
        for method, operation in methods.items()
    }


def test_api_routes_go_to_stage1_alias(template):
    operations = _api_operations(template)

    assert set(operations) == ROUTES
    for route, operation in operations.items():
        integration = operation["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy", route
        assert integration["payloadFormatVersion"] == "2.0", route
        assert references(integration["uri"], f"{STAGE1}.Alias"), route


def test_api_authorizes_scoring_routes_only(template):
    operations = _api_operations(template)

    for route, operation in operations.items():
        if route in AUTHORIZED_ROUTES:
            branches = operation["security"]["Fn::If"]
            assert branches[0] == "AuthorizeWithIam", route
            assert branches[1] == [{"sigv4": []}], route
            assert branches[2]["Fn::If"][:2] == ["AuthorizeWithJwt", [{"jwt": []}]], route
        else:
            assert "security" not in operation, route


def test_api_stage_logs_and_throttles(template):
    api = template["Resources"]["ScoringApi"]["Properties"]

    assert api["StageName"] == {"Ref": "StageName"}
    assert references(api["AccessLogSettings"]["DestinationArn"], "ApiAccessLogGroup")
    assert api["DefaultRouteSettings"]["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert api["DefaultRouteSettings"]["ThrottlingBurstLimit"] == {
        "Ref": "ApiThrottlingBurstLimit"}
    assert parameter_default(template, "ApiAuthorization") == "IAM"


# --------------------------------------------------------------------- queue, alarms


def test_audit_queue_redrives_after_five_receives(template):
    queue = template["Resources"]["AuditFallbackQueue"]["Properties"]
    replay = template["Resources"]["AuditReplayFunction"]["Properties"]
    event = replay["Events"]["AuditFallback"]["Properties"]

    assert queue["RedrivePolicy"]["maxReceiveCount"] == 5
    assert references(queue["RedrivePolicy"]["deadLetterTargetArn"],
                      "AuditFallbackDeadLetterQueue")
    assert references(event["Queue"], "AuditFallbackQueue")
    assert "ReportBatchItemFailures" in event["FunctionResponseTypes"]
    # AWS recommends a visibility timeout of at least 6 times the consumer's timeout.
    assert queue["VisibilityTimeout"] >= 6 * replay["Timeout"]


def test_deployments_roll_back_on_alarms(template):
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm")
    assert parameter_default(template, "DeploymentType") == "Canary10Percent5Minutes"
    assert "AllAtOnce" in template["Parameters"]["DeploymentType"]["AllowedValues"]

    for name in (STAGE1, STAGE2):
        preference = template["Resources"][name]["Properties"]["DeploymentPreference"]
        assert preference["Type"] == {"Ref": "DeploymentType"}, name
        assert preference["Alarms"], name
        for alarm in preference["Alarms"]:
            assert alarm["Ref"] in alarms, (name, alarm)


def test_custom_metric_alarms_use_emitted_names(template):
    names = []
    for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values():
        properties = alarm["Properties"]
        if properties.get("Namespace") == {"Ref": "MetricsNamespace"}:
            names.append(properties["MetricName"])
        for query in properties.get("Metrics", []):
            metric = query.get("MetricStat", {}).get("Metric", {})
            if metric.get("Namespace") == {"Ref": "MetricsNamespace"}:
                names.append(metric["MetricName"])

    assert {"AuditWriteFailures", "Escalations", "Decisions"} <= set(names)
    assert set(names) <= EMITTED_METRICS


def test_dashboard_body_is_json(template):
    body, variables = template["Resources"]["ServiceDashboard"]["Properties"]["DashboardBody"][
        "Fn::Sub"]
    # Numbers for the threshold parameters, a plain string for every other substitution.
    numeric = {"EscalationRateMin", "EscalationRateMax"}
    filled = re.sub(r"\$\{([^}]+)\}",
                    lambda match: "0.1" if match.group(1) in numeric else "x", body)

    widgets = json.loads(filled)["widgets"]
    assert len(widgets) >= 6
    assert set(variables) == {"FallbackQueueName", "DeadLetterQueueName"}


def test_api_access_log_format_is_json(template):
    log_format = template["Resources"]["ScoringApi"]["Properties"]["AccessLogSettings"]["Format"]

    fields = json.loads(log_format)
    assert {"requestId", "status", "routeKey", "integrationError"} <= set(fields)


# --------------------------------------------------------------------- samconfig


def test_samconfig_environments():
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))

    for environment in ("default", "prod"):
        deploy = config[environment]["deploy"]["parameters"]
        assert "CAPABILITY_AUTO_EXPAND" in deploy["capabilities"], environment
        assert "CAPABILITY_IAM" in deploy["capabilities"], environment
        assert deploy["resolve_s3"] is True, environment
        assert config[environment]["build"]["parameters"]["cached"] is True, environment

    prod = config["prod"]["deploy"]["parameters"]["parameter_overrides"]
    assert "ApiAuthorization=IAM" in prod
    assert "DeploymentType=Canary10Percent5Minutes" in prod
    assert "DatabaseDeletionProtection=true" in prod
