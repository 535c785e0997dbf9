"""Benchmark suite: summaries, the results table, and the reference it compares with."""

from __future__ import annotations

import shutil
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from benchmarks.cli import build_parser, main, run_mode
from benchmarks.cold_start import (
    AwsStandIn,
    _aws_environment,
    _environment,
    _import_stack,
    _stack_figure,
    third_party_modules,
)
from benchmarks.measure import Figure, summarize, time_calls
from benchmarks.reference import (
    create_reference_app,
    fit_reference,
    load_reference,
    save_reference,
)
from benchmarks.report import format_number, render_header, render_markdown, render_table
from benchmarks.throughput import WRK_SCRIPT, _drive_wrk
from benchmarks.workspace import DATETIME, FULL, _period
from fraudscore.bundle import load_bundle
from fraudscore.storage import open_store


def test_summarize_median_and_p99() -> None:
    summary = summarize([float(value) for value in range(100, 0, -1)])
    assert summary.runs == 100
    assert summary.median == 50.5
    assert summary.p99 == 99.0


def test_summarize_single_sample() -> None:
    summary = summarize([3.0])
    assert summary.median == 3.0
    assert summary.p99 == 3.0


def test_summarize_rejects_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        summarize([])


def test_time_calls_counts_runs_not_warmup() -> None:
    calls: list[int] = []
    samples = time_calls(calls.append, 5, warmup=3)
    assert len(samples) == 5
    assert calls == [0, 1, 2, 0, 1, 2, 3, 4]
    assert all(sample >= 0 for sample in samples)


def test_ratio_for_times_and_rates() -> None:
    time_figure = Figure("g", "latency", "ms", 2.0, reference=10.0)
    rate_figure = Figure("g", "rate", "req/s", 300.0, reference=100.0, higher_is_better=True)
    assert time_figure.ratio == 5.0
    assert rate_figure.ratio == 3.0
    assert Figure("g", "skipped", "ms", None, reference=1.0).ratio is None
    assert Figure("g", "alone", "ms", 1.0).ratio is None


def test_format_number_significant_digits() -> None:
    assert format_number(None) == "-"
    assert format_number(123456.7) == "123,457"
    assert format_number(123.4) == "123"
    assert format_number(12.34) == "12.3"
    assert format_number(1.234) == "1.23"
    assert format_number(0.01234) == "0.012"


def test_table_shows_missed_target_and_notes() -> None:
    figures = [
        Figure("warm", "stage-1 decision", "ms", 1.5, runs=10, p99=2.0, reference=3.0,
               target="median < 1 ms", met=False, note="slow framework"),
        Figure("size", "stage 1", "MiB", None, note="skipped: no build"),
    ]
    table = render_table(figures)
    assert "warm: stage-1 decision" in table
    assert "2.0x" in table
    assert " NO" in table
    assert "skipped" in table
    assert "- warm: stage-1 decision: slow framework" in table

    markdown = render_markdown(figures).splitlines()
    assert len(markdown) == 2 + len(figures)
    assert markdown[2].startswith("| warm: stage-1 decision | ms | 10 |")


@pytest.fixture(scope="module")
def reference_setup(simulated_history: Path, bundle_dir: Path, tmp_path_factory):  # type: ignore[no-untyped-def]
    bundle = load_bundle(open_store(str(bundle_dir)))
    label = bundle.manifest["training_data"]["label"]
    frame = pd.read_parquet(simulated_history, columns=[*bundle.schema.names, label, DATETIME])
    fitted = fit_reference(_period(frame, bundle.manifest, "train"), label, bundle.manifest)
    path = tmp_path_factory.mktemp("reference") / "reference.joblib"
    save_reference(fitted, path)
    test = _period(frame, bundle.manifest, "test").head(500)
    return bundle, load_reference(path), test


def test_reference_stage1_matches_bundle(reference_setup) -> None:  # type: ignore[no-untyped-def]
    bundle, reference, test = reference_setup
    rows = test[list(bundle.schema.names)]
    ours = bundle.stage1.probability(rows.to_numpy(np.float64))
    theirs = reference.stage1_probability(rows)
    np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=1e-9)


def test_reference_routes_like_bundle(reference_setup) -> None:  # type: ignore[no-untyped-def]
    bundle, reference, test = reference_setup
    rows = test[list(bundle.schema.names)]
    escalated = bundle.band.contains(bundle.stage1.probability(rows.to_numpy(np.float64)))
    answers = reference.decide_many(rows.to_dict("records"))
    assert [answer["stage"] == "stage2" for answer in answers] == escalated.tolist()


def test_reference_app_checks_feature_names(reference_setup) -> None:  # type: ignore[no-untyped-def]
    bundle, reference, test = reference_setup
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from fastapi.testclient import TestClient
    client = TestClient(create_reference_app(reference))
    features = test[list(bundle.schema.names)].iloc[0].to_dict()

    answered = client.post("/predict", json={"features": features})
    assert answered.status_code == 200
    assert answered.json()["stage"] in {"stage1", "stage2"}

    features.pop(bundle.schema.names[0])
    rejected = client.post("/predict", json={"features": features})
    assert rejected.status_code == 422


class _HalfFailingHandler(BaseHTTPRequestHandler):
    """Respond 200 to bodies containing "ok" and 500 to the others, with keep-alive."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200 if b"ok" in body else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_wrk_counts_non_200_responses(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HalfFailingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script = tmp_path / "post.lua"
    script.write_text(WRK_SCRIPT)
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text('{"status": "ok"}\n{"status": "bad"}\n')
    try:
        result = _drive_wrk(shutil.which("wrk") or "wrk", f"http://127.0.0.1:{server.server_port}",
                            script, bodies, concurrency=1, seconds=1)
    finally:
        server.shutdown()
        server.server_close()

    # One connection sends the two bodies in turn, so half the responses are 500.
    assert result.requests > 10
    assert abs(result.errors - result.requests / 2) <= 1
    assert 0 < result.latency_median_ms <= result.latency_p99_ms
    assert result.seconds > 0.5


def test_server_options_override_mode() -> None:
    args = build_parser().parse_args(["--full", "--concurrency", "16", "16", "--rounds", "1"])

    mode = run_mode(args)

    assert mode.server_concurrency == (16,)
    assert mode.server_rounds == 1
    assert mode.scoring_runs == FULL.scoring_runs
    assert run_mode(build_parser().parse_args(["--full"])) == FULL


@pytest.mark.parametrize("option", [["--rounds", "0"], ["--concurrency", "-1"],
                                    ["--concurrency", "many"]])
def test_server_options_reject_bad_values(option: list[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--smoke", *option])


def test_server_options_need_throughput_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--smoke", "--only", "scoring", "--rounds", "2"])

    assert "which --only leaves out" in capsys.readouterr().err


def test_third_party_modules_drop_own_code() -> None:
    loaded = ["numpy._core", "fraudscore.schema", "numpy", "app", "application", "fraudscore"]

    third_party = third_party_modules(loaded, ("app", "fraudscore"))

    assert third_party == ["numpy._core", "numpy", "application"]


def test_import_stack_imports_each_module_once_in_order(tmp_path: Path) -> None:
    package = tmp_path / "deployment"
    package.mkdir()
    record = tmp_path / "imported.txt"
    for name, body in (("leaf", ""), ("trunk", "import leaf\n")):
        (package / f"{name}.py").write_text(
            f"{body}with open({str(record)!r}, 'a') as f:\n    f.write('{name}\\n')\n")

    outcome = _import_stack(SimpleNamespace(work=tmp_path), ["leaf", "trunk", "leaf"],
                            [package], {"PATH": "/usr/bin:/bin"})

    assert record.read_text().split() == ["leaf", "trunk"]
    assert outcome["failed"] == []
    assert outcome["import_ms"] > 0


def test_import_stack_rejects_a_module_that_fails(tmp_path: Path) -> None:
    package = tmp_path / "deployment"
    package.mkdir()
    (package / "broken.py").write_text("raise ImportError('needs a native library')\n")

    with pytest.raises(RuntimeError, match="broken"):
        _import_stack(SimpleNamespace(work=tmp_path), ["broken"], [package],
                      {"PATH": "/usr/bin:/bin"})


def test_stack_figure_is_the_highest_reachable_ratio() -> None:
    samples = [{"import_ms": value, "failed": []} for value in (300.0, 200.0, 250.0)]

    figure = _stack_figure(samples, reference_ms=1000.0, module_count=42)

    assert figure.median == 250.0
    assert figure.runs == 3
    assert figure.ratio == 4.0
    assert "42 third-party modules" in figure.note


@pytest.mark.parametrize("name", ["stage 1", "reference"])
def test_aws_variant_reads_model_and_password_from_aws(tmp_path: Path, name: str) -> None:
    workspace = SimpleNamespace(
        bundle_dir=tmp_path / "bundle", reference_path=tmp_path / "reference.joblib",
        database_url="postgresql+pg8000://bench%40user@127.0.0.1:5433/fraudbench_1",
    )
    aws = AwsStandIn("http://127.0.0.1:4566", "s3://bucket/bundles",
                     "s3://bucket/reference/model.joblib", "arn:aws:secretsmanager:secret")
    prefix = "REFERENCE_" if name == "reference" else ""

    local = _environment(workspace, name, "http://127.0.0.1:9001")
    changed = _aws_environment(workspace, name, local, aws)

    assert f"{prefix}DATABASE_URL" in local
    assert f"{prefix}DATABASE_URL" not in changed
    assert changed["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
    assert changed[f"{prefix}DATABASE_SECRET_ARN"] == "arn:aws:secretsmanager:secret"
    assert changed[f"{prefix}DATABASE_HOST"] == "127.0.0.1"
    assert changed[f"{prefix}DATABASE_PORT"] == "5433"
    assert changed[f"{prefix}DATABASE_NAME"] == "fraudbench_1"
    if name == "reference":
        assert "REFERENCE_MODEL_PATH" not in changed
        assert changed["REFERENCE_MODEL_URI"] == "s3://bucket/reference/model.joblib"
    else:
        assert changed["MODEL_URI"] == "s3://bucket/bundles"
        assert changed["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
        assert changed["STAGE2_ENDPOINT_URL"] == "http://127.0.0.1:9001"


def test_header_shows_the_interpreter_speed() -> None:
    machine = {"cores": 2, "memory_gib": 23.5, "cpu_model": "cpu", "platform": "linux",
               "python": "3.12.1", "packages": {"numpy": "2"}, "interpreter_speed_ms": 81.4}
    meta = {"command": "python -m benchmarks --smoke", "mode": "smoke",
            "started_at": "2026-01-01T00:00:00+00:00", "duration_seconds": 1.0,
            "machine": machine, "load_average": {"start": [0.5], "end": [0.7]},
            "postgres": None, "data": "simulated", "bundle": "b"}

    header = render_header(meta)

    assert "Python:     3.12.1, fixed pure-Python workload 81 ms" in header
    del machine["interpreter_speed_ms"]
    assert "Python:     3.12.1\n" in render_header(meta)
