"""Figure 3: cold start of each function in a fresh process, as Lambda runs it.

Each run starts the base Python interpreter of this environment with ``-S -s -B``: no
site-packages, no user site, no .pyc written. ``PYTHONPATH`` lists only the deployment's
directories and the runtime-provided packages, so every import comes from the build
output. The child checks this and reports any module loaded from elsewhere. It times the
import of the handler module (which loads the bundle or the joblib file) and the first
call of the handler. The standard library keeps its .pyc, as in the Lambda runtime.
Without .pyc in the deployment, Python compiles every module it imports from there.

Stage 1 and the reference run as deployed, with audit rows written to PostgreSQL, so the
first handler call includes connecting to the database and one INSERT. Without a reachable
server both run with audit off, and the figures state it. The environment sets
``AWS_LAMBDA_INITIALIZATION_TYPE=on-demand``, as Lambda does in a container started for a
waiting request, so stage 1 creates its Lambda client on the first escalation. Its first
request is one that stage 1 decides. A second stage-1 figure starts with a request that
it escalates: that response includes creating the client and one invoke of stage 2, which
this process serves, warm, behind a Lambda Invoke endpoint on 127.0.0.1.

One more figure bounds the ratio that stage 1 can reach with its packages. A fresh process
imports, in the same order, every third-party module that a stage-1 cold start loads, and
nothing of the service. The reference's cold start divided by that time is the highest
ratio that any stage-1 code built on these packages could show.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from benchmarks import deployments
from benchmarks.measure import Figure, summarize
from benchmarks.workspace import Workspace
from fraudscore.local_lambda import serve_lambda
from fraudscore.settings import Settings
from fraudscore.stage2_service import Stage2Service
from tests.lambda_events import http_api_event
from training.publish import publish_bundle

logger = logging.getLogger(__name__)

GROUP = "cold start"
TARGETS_MS = {"stage 1": 500.0, "stage 2": 700.0}
MIN_SPEEDUP = 4.0
ESCALATED = "stage 1 escalated"
STAGE2_FUNCTION_NAME = "fraud-stage2"
# Variants that read their model from S3 and the database password from Secrets Manager.
FROM_AWS = {"stage 1": "stage 1 from AWS", "reference": "reference from AWS"}
S3_BUCKET = "fraud-benchmark"
# Top-level modules of stage 1's own code. Every other module loaded from its deployment
# directories belongs to a third-party package.
STAGE1_OWN_CODE = ("app", "fraudscore")

_CHILD = r"""
import json, sys, time
started = time.perf_counter()
args = json.loads(sys.argv[1])
import importlib
module = importlib.import_module(args["module"])
imported = time.perf_counter()
with open(args["event"]) as stream:
    event = json.load(stream)

class Context:
    function_name = "benchmark"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:benchmark"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    function_version = "$LATEST"
    log_group_name = "/aws/lambda/benchmark"
    log_stream_name = "benchmark"
    def get_remaining_time_in_millis(self):
        return 30000

response = module.handler(event, Context())
answered = time.perf_counter()

import os, sysconfig
deployment = [os.path.realpath(p) for p in args["allowed"]]
stdlib = [os.path.realpath(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib")]

def under(loaded, roots):
    path = getattr(loaded, "__file__", None)
    return bool(path) and any(os.path.realpath(path).startswith(root + os.sep) for root in roots)

modules = list(sys.modules.items())
outside = sorted(name for name, loaded in modules
                 if getattr(loaded, "__file__", None) and not under(loaded, deployment + stdlib))
# importlib moves each module to the end of sys.modules when its import finishes. This
# list keeps that order, in which every module comes after the modules it imports.
from_deployment = [name for name, loaded in modules if under(loaded, deployment)]
ok = response.get("statusCode") == 200 if "statusCode" in response else "probabilities" in response
answer = json.loads(response["body"]) if ok and "body" in response else {}
with open(args["result"], "w") as stream:
    json.dump({"import_ms": (imported - started) * 1e3, "first_ms": (answered - imported) * 1e3,
               "ok": ok, "outside": outside, "modules": len(sys.modules),
               "loaded": from_deployment, "stage": answer.get("stage"),
               "degraded": answer.get("degraded")}, stream)
"""

# Imports the given modules in order, with the garbage collector paused as stage 1 pauses
# it during init (here also for the modules of the first answer). A module that an earlier
# one imported is not imported again.
_STACK_CHILD = r"""
import json, sys, time
started = time.perf_counter()
import gc, importlib
gc.disable()
args = json.loads(sys.argv[1])
failed = []
for name in args["modules"]:
    if name not in sys.modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed.append(f"{name}: {exc!r}")
imported = time.perf_counter()
with open(args["result"], "w") as stream:
    json.dump({"import_ms": (imported - started) * 1e3, "failed": failed,
               "modules": len(sys.modules)}, stream)
"""


def base_python() -> str:
    """Return the interpreter this virtual environment was created from."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidate = Path(sys.base_prefix) / "bin" / version
    if candidate.exists():
        return str(candidate)
    return str(getattr(sys, "_base_executable", sys.executable))


@dataclass(frozen=True)
class Variant:
    """One kind of cold start: which function, with or without .pyc, and its first request."""

    name: str
    compiled: bool
    module: str
    dirs: list[Path]
    environment: dict[str, str]
    event: Path
    # The ``stage`` that the first response must report, for API responses.
    expect_stage: str | None = None


def run(workspace: Workspace) -> list[Figure]:
    """Measure each function's cold start with and without .pyc, and the reference's.

    The runs take turns: each round starts every variant once, then the import of stage
    1's third-party modules alone. A machine whose speed drifts during the run then
    slows every figure alike, and their ratios hold.
    """
    missing = deployments.build_output_missing()
    if missing:
        return [Figure(GROUP, "cold start", "ms", None, note=f"skipped: {missing}")]
    prepared = deployments.prepare(workspace)
    events = _write_events(workspace)
    runs = workspace.mode.cold_runs
    audit = "PostgreSQL audit" if workspace.database_url else "audit off"

    with _stage2_endpoint(workspace) as endpoint_url, _aws_stand_in(workspace) as aws:
        variants = _variants(workspace, prepared, events, endpoint_url, aws)
        stage1 = next(v for v in variants if v.name == "stage 1" and v.compiled)
        # One start before the rounds lists the modules that stage 1 loads, for the bound.
        listing = _start(workspace, stage1.module, stage1.dirs, stage1.environment,
                         stage1.event, expect_stage=stage1.expect_stage)
        stack_modules = third_party_modules(listing["loaded"], STAGE1_OWN_CODE)
        samples: dict[tuple[str, bool], list[dict[str, Any]]] = {
            (v.name, v.compiled): [] for v in variants}
        stack = []
        for round_number in range(1, runs + 1):
            for variant in variants:
                samples[(variant.name, variant.compiled)].append(_start(
                    workspace, variant.module, variant.dirs, variant.environment,
                    variant.event, expect_stage=variant.expect_stage))
            stack.append(_import_stack(workspace, stack_modules, stage1.dirs,
                                       stage1.environment))
            logger.info("cold start round %d of %d: stage 1 %.0f ms, reference %.0f ms",
                        round_number, runs, _total(samples[("stage 1", True)][-1]),
                        _total(samples[("reference", True)][-1]))
        profiles = {v.name: _import_profile(workspace, v.module, v.dirs, v.environment, v.event)
                    for v in variants if v.compiled and v.name in ("stage 1", "stage 2",
                                                                   "reference")}

    measured = {key: _summarize_starts(values) for key, values in samples.items()}
    figures = _figures(measured, profiles, runs, audit, aws.secret_arn is not None)
    figures.append(_stack_figure(stack, measured[("reference", True)]["total"].median,
                                 len(stack_modules)))
    return figures


def _variants(workspace: Workspace, prepared: deployments.Deployments,
              events: dict[str, Path], endpoint_url: str, aws: AwsStandIn) -> list[Variant]:
    def dirs(name: str, compiled: bool) -> list[Path]:
        deployment = prepared.functions[name]
        return [*(deployment.compiled_dirs if compiled else deployment.source_dirs),
                prepared.runtime_dir]

    def expect(name: str) -> str | None:
        return "stage1" if name == "stage 1" else None

    variants = []
    for name in ("stage 1", "stage 2", "reference"):
        environment = _environment(workspace, name, endpoint_url)
        for compiled in (False, True):
            variants.append(Variant(name, compiled, prepared.functions[name].module,
                                    dirs(name, compiled), environment, events[name],
                                    expect(name)))
    variants.append(Variant(ESCALATED, True, prepared.functions["stage 1"].module,
                            dirs("stage 1", True),
                            _environment(workspace, "stage 1", endpoint_url),
                            events[ESCALATED], "stage2"))
    for name, variant_name in FROM_AWS.items():
        environment = _aws_environment(workspace, name,
                                       _environment(workspace, name, endpoint_url), aws)
        variants.append(Variant(variant_name, True, prepared.functions[name].module,
                                dirs(name, True), environment, events[name], expect(name)))
    return variants


@dataclass(frozen=True)
class AwsStandIn:
    """moto's S3 and Secrets Manager on 127.0.0.1, holding what the functions read in AWS."""

    endpoint_url: str
    bundle_uri: str
    reference_uri: str
    # None when the run has no database, and so no password to keep.
    secret_arn: str | None


@contextmanager
def _aws_stand_in(workspace: Workspace) -> Iterator[AwsStandIn]:
    """Serve the bundle, the reference's joblib file and the database secret as AWS would.

    The bundle is published with ``training.publish``, as a deployment publishes it, so
    stage 1 follows ``ACTIVE.json`` to it.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        options = {"endpoint_url": f"http://{host}:{port}", "region_name": "us-east-1",
                   "aws_access_key_id": "benchmark", "aws_secret_access_key": "benchmark"}
        s3 = boto3.client("s3", **options)
        s3.create_bucket(Bucket=S3_BUCKET)
        publish_bundle(workspace.bundle_dir, f"s3://{S3_BUCKET}/bundles", s3_client=s3)
        s3.upload_file(str(workspace.reference_path), S3_BUCKET, "reference/model.joblib")
        secret_arn = None
        if workspace.database_url:
            address = urlsplit(workspace.database_url)
            secret = {"username": unquote(address.username or "postgres"),
                      "password": unquote(address.password or "")}
            secret_arn = boto3.client("secretsmanager", **options).create_secret(
                Name="fraud-benchmark-database", SecretString=json.dumps(secret))["ARN"]
        yield AwsStandIn(options["endpoint_url"], f"s3://{S3_BUCKET}/bundles",
                         f"s3://{S3_BUCKET}/reference/model.joblib", secret_arn)
    finally:
        server.stop()


def _aws_environment(workspace: Workspace, name: str, environment: dict[str, str],
                     aws: AwsStandIn) -> dict[str, str]:
    """``environment`` changed to read the model from S3 and the password from Secrets Manager."""
    changed = {**environment, "AWS_ENDPOINT_URL": aws.endpoint_url}
    prefix = "REFERENCE_" if name == "reference" else ""
    if name == "reference":
        del changed["REFERENCE_MODEL_PATH"]
        changed["REFERENCE_MODEL_URI"] = aws.reference_uri
    else:
        changed["MODEL_URI"] = aws.bundle_uri
    if aws.secret_arn and workspace.database_url:
        address = urlsplit(workspace.database_url)
        del changed[f"{prefix}DATABASE_URL"]
        changed.update({
            f"{prefix}DATABASE_SECRET_ARN": aws.secret_arn,
            f"{prefix}DATABASE_HOST": address.hostname or "127.0.0.1",
            f"{prefix}DATABASE_PORT": str(address.port or 5432),
            f"{prefix}DATABASE_NAME": address.path.lstrip("/"),
        })
    return changed


@contextmanager
def _stage2_endpoint(workspace: Workspace) -> Iterator[str]:
    """Serve the bundle's stage 2 behind a local Lambda Invoke endpoint on 127.0.0.1.

    Stage 1 escalates to it as it would to the stage-2 function. It runs in this
    process, warm, so an escalated cold start counts stage 1's own start and one
    invoke, not stage 2's cold start (measured on its own).
    """
    service = Stage2Service.start(Settings.from_env({}, model_uri=str(workspace.bundle_dir)))
    if service.load_error is not None:
        raise RuntimeError(f"stage 2 for the escalated cold start: {service.load_error}")
    server, thread = serve_lambda(lambda event, _context: service.handle(event),
                                  function_name=STAGE2_FUNCTION_NAME)
    try:
        yield server.endpoint_url
    finally:
        server.stop()
        thread.join(timeout=10)


def _total(sample: dict[str, Any]) -> float:
    return float(sample["import_ms"] + sample["first_ms"])


def _start_note(start: dict[str, Any], detail: str = "") -> str:
    """Describe a summarized cold start: import time, first answer time, modules loaded."""
    return (f"import {start['import'].median:.0f} ms + first answer "
            f"{start['first'].median:.0f} ms{detail}; {start['modules']} modules")


def _summarize_starts(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "total": summarize([_total(s) for s in samples]),
        "import": summarize([s["import_ms"] for s in samples]),
        "first": summarize([s["first_ms"] for s in samples]),
        "modules": samples[0]["modules"],
    }


def third_party_modules(loaded: list[str], own: tuple[str, ...]) -> list[str]:
    """Return the names in ``loaded``, in order, that belong to none of the ``own`` packages."""
    return [name for name in loaded if name.split(".", 1)[0] not in own]


def _stack_figure(samples: list[dict[str, Any]], reference_ms: float,
                  module_count: int) -> Figure:
    total = summarize([sample["import_ms"] for sample in samples])
    note = (f"{module_count} third-party modules that a stage-1 cold start loads up to its "
            "first answer, imported in the same order with no service code running. The "
            "ratio is the highest stage 1 can reach with these packages")
    return Figure(GROUP, "stage 1's third-party imports alone, .pyc shipped", "ms",
                  total.median, runs=total.runs, reference=reference_ms, note=note)


def _figures(measured: dict[tuple[str, bool], dict[str, Any]],
             profiles: dict[str, list[tuple[str, float]]], runs: int,
             audit: str, with_secret: bool) -> list[Figure]:
    figures = []
    for name in ("stage 1", "stage 2"):
        for compiled in (False, True):
            ours = measured[(name, compiled)]
            reference = measured[("reference", compiled)]
            label = ".pyc shipped" if compiled else "no .pyc (python -B)"
            with_audit = f", {audit}" if name == "stage 1" else ""
            figure = Figure(
                GROUP, f"{name}, {label}{with_audit}", "ms", ours["total"].median, runs=runs,
                reference=reference["total"].median,
                note=_start_note(ours),
                extra={"import_profile_ms": profiles[name],
                       "reference_import_profile_ms": profiles["reference"]},
            )
            if compiled:
                limit = TARGETS_MS[name]
                figure.target = f"< {limit:.0f} ms and >= {MIN_SPEEDUP:.0f}x reference"
                figure.met = ours["total"].median < limit and (figure.ratio or 0) >= MIN_SPEEDUP
            figures.append(figure)
            if name == "stage 1" and compiled:
                escalated = measured[(ESCALATED, True)]
                figures.append(Figure(
                    GROUP, f"stage 1, .pyc shipped{with_audit}, first answer escalated", "ms",
                    escalated["total"].median, runs=runs, reference=reference["total"].median,
                    note=_start_note(escalated, ", which creates the Lambda client and "
                                                "invokes stage 2 (warm, on 127.0.0.1)"),
                ))
    sources = "model in S3" + (", password in Secrets Manager" if with_secret else "")
    ours, reference = measured[(FROM_AWS["stage 1"], True)], measured[(FROM_AWS["reference"], True)]
    figures.append(Figure(
        GROUP, f"stage 1, .pyc shipped, {audit}, {sources}", "ms", ours["total"].median,
        runs=runs, reference=reference["total"].median,
        note=_start_note(ours, ". S3 and Secrets Manager are moto's server on 127.0.0.1"),
    ))
    for compiled in (False, True):
        reference = measured[("reference", compiled)]
        label = ".pyc shipped" if compiled else "no .pyc (python -B)"
        figures.append(Figure(
            GROUP, f"reference (one function), {label}, {audit}", "ms",
            reference["total"].median, runs=runs,
            note=_start_note(reference),
        ))
    reference = measured[(FROM_AWS["reference"], True)]
    figures.append(Figure(
        GROUP, f"reference (one function), .pyc shipped, {audit}, {sources}", "ms",
        reference["total"].median, runs=runs,
        note=_start_note(reference, ", with boto3"),
    ))
    return figures


def _environment(workspace: Workspace, name: str, endpoint_url: str) -> dict[str, str]:
    environment = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        # Region and dummy credentials, as Lambda sets them. No AWS call is made, and
        # the instance metadata service is disabled so nothing asks it for credentials.
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "benchmark",
        "AWS_SECRET_ACCESS_KEY": "benchmark",
        "AWS_EC2_METADATA_DISABLED": "true",
        # A container started for a waiting request, as most cold starts are.
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "API_BASE_PATH": "/v1",
    }
    if name == "reference":
        environment["REFERENCE_MODEL_PATH"] = str(workspace.reference_path)
        if workspace.database_url:
            environment["REFERENCE_DATABASE_URL"] = workspace.database_url
        return environment
    environment["MODEL_URI"] = str(workspace.bundle_dir)
    environment["AUDIT_ENABLED"] = "false"
    if name == "stage 1":
        # As deployed: stage 2 is another function, which stage 1 invokes through a Lambda
        # client, and every decision is audited.
        environment["STAGE2_MODE"] = "lambda"
        environment["STAGE2_FUNCTION_NAME"] = STAGE2_FUNCTION_NAME
        environment["STAGE2_ENDPOINT_URL"] = endpoint_url
        environment["STAGE2_READ_TIMEOUT_SECONDS"] = "10"
        if workspace.database_url:
            environment["AUDIT_ENABLED"] = "true"
            environment["DATABASE_URL"] = workspace.database_url
            environment["DATABASE_POOL_SIZE"] = "1"
            environment["DATABASE_MAX_OVERFLOW"] = "0"
    return environment


def _write_events(workspace: Workspace) -> dict[str, Path]:
    directory = workspace.work / "events"
    directory.mkdir(exist_ok=True)
    confident = workspace.examples.get("confident_genuine") or workspace.sample[0]
    http_event = http_api_event("POST", "/predict", {"features": confident})
    names = list(workspace.bundle.schema.names)
    stage2_event = {
        "bundle_version": workspace.bundle.version,
        "correlation_id": "cold-start",
        "features": [[float(confident[name]) for name in names]],
    }
    paths = {}
    uncertain = workspace.examples.get("uncertain")
    if not uncertain:
        raise RuntimeError("the bundle has no 'uncertain' example transaction to escalate")
    escalated_event = http_api_event("POST", "/predict", {"features": uncertain})
    for name, event in (("stage 1", http_event), ("stage 2", stage2_event),
                        ("reference", http_event), (ESCALATED, escalated_event)):
        path = directory / f"{name.replace(' ', '')}.json"
        path.write_text(json.dumps(event))
        paths[name] = path
    return paths


def _start(workspace: Workspace, module: str, dirs: list[Path], environment: dict[str, str],
           event: Path, *, expect_stage: str | None = None,
           extra_flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run one fresh interpreter that imports ``module`` and calls its handler once.

    With ``expect_stage``, the response must be an undegraded decision of that stage.
    """
    arguments = {"module": module, "event": str(event), "allowed": [str(d) for d in dirs]}
    outcome = _run_child(workspace, _CHILD, arguments, dirs, environment,
                         extra_flags=extra_flags, description=f"cold start of {module}")
    if not outcome["ok"]:
        raise RuntimeError(f"cold start of {module}: the first call did not succeed")
    if expect_stage is not None and (outcome["stage"], outcome["degraded"]) != (expect_stage,
                                                                              False):
        raise RuntimeError(f"cold start of {module}: the first response came from "
                           f"{outcome['stage']} (degraded: {outcome['degraded']}), "
                           f"expected {expect_stage}")
    if outcome["outside"]:
        raise RuntimeError(f"cold start of {module} imported modules from outside the "
                           f"deployment: {outcome['outside'][:10]}")
    return outcome


def _import_stack(workspace: Workspace, modules: list[str], dirs: list[Path],
                  environment: dict[str, str]) -> dict[str, Any]:
    """Run one fresh interpreter that imports ``modules`` in order, and nothing else."""
    outcome = _run_child(workspace, _STACK_CHILD, {"modules": modules}, dirs, environment,
                         description="third-party imports")
    if outcome["failed"]:
        # A module left out would make the time too low and the ratio's bound too high.
        raise RuntimeError(f"{len(outcome['failed'])} third-party modules failed to import "
                           f"on their own: {outcome['failed'][:5]}")
    return outcome


def _run_child(workspace: Workspace, script: str, arguments: dict[str, Any], dirs: list[Path],
               environment: dict[str, str], *, extra_flags: tuple[str, ...] = (),
               description: str) -> dict[str, Any]:
    """Run ``script`` in a fresh base interpreter on ``dirs`` and return the JSON it wrote."""
    with tempfile.TemporaryDirectory(dir=workspace.work) as scratch:
        result = Path(scratch) / "result.json"
        completed = subprocess.run(  # noqa: S603 - fixed interpreter and arguments
            [base_python(), "-S", "-s", "-B", *extra_flags, "-c", script,
             json.dumps({**arguments, "result": str(result)})],
            cwd=scratch, env={**environment, "PYTHONPATH": os.pathsep.join(map(str, dirs))},
            capture_output=True, text=True, timeout=300, check=False,
        )
        if completed.returncode != 0 or not result.exists():
            raise RuntimeError(f"{description} failed ({completed.returncode}):\n"
                               f"{completed.stderr[-3000:]}")
        outcome = json.loads(result.read_text())
    outcome["stderr"] = completed.stderr
    return outcome


def _import_profile(workspace: Workspace, module: str, dirs: list[Path],
                    environment: dict[str, str], event: Path,
                    top: int = 12) -> list[tuple[str, float]]:
    """Import time per top-level package (``-X importtime`` self times summed), in ms."""
    outcome = _start(workspace, module, dirs, environment, event,
                     extra_flags=("-X", "importtime"))
    totals: dict[str, float] = {}
    for line in outcome["stderr"].splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(\S+)", line)
        if match:
            package = match.group(2).split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(match.group(1)) / 1e3
    return sorted(totals.items(), key=lambda item: item[1], reverse=True)[:top]
