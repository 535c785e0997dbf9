"""Figure 5: throughput of the local server with PostgreSQL audit.

uvicorn serves ``functions.stage1.app:app`` with one worker per core and the access log
off. The reference app (``benchmarks.reference_app:app``) is served the same way and
writes its own audit rows to the same database. An async load generator
(``httpx.AsyncClient``) in this process sends N requests per concurrency level to
127.0.0.1 and counts every non-200 answer or transport error. The load generator
shares the machine's cores with the server, which lowers both figures alike.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.measure import Figure, summarize
from benchmarks.workspace import ROOT, Workspace

logger = logging.getLogger(__name__)

GROUP = "server throughput"
CONCURRENCY = (1, 16, 64)
TARGET_CONCURRENCY = 16
MIN_SPEEDUP = 5.0
STARTUP_TIMEOUT_SECONDS = 120
WARMUP_REQUESTS = 200


@dataclass
class LoadResult:
    """Outcome of one load level: rate, latencies in ms, and failed requests."""

    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def run(workspace: Workspace) -> list[Figure]:
    """Serve each app with uvicorn and drive it at each concurrency level."""
    if not workspace.database_url:
        return [Figure(GROUP, "server throughput", "req/s", None,
                       note="skipped: PostgreSQL not reachable")]
    workers = os.cpu_count() or 1
    bodies = [json.dumps({"features": row}).encode() for row in workspace.sample]
    # Each worker loads the booster on its first escalated request and blocks meanwhile,
    # so the warm-up sends uncertain transactions on several connections first.
    uncertain = workspace.examples.get("uncertain") or workspace.sample[0]
    warmup = [json.dumps({"features": uncertain}).encode()]
    total = workspace.mode.server_requests

    service_env = {
        "MODEL_URI": str(workspace.bundle_dir),
        "DATABASE_URL": workspace.database_url,
        "AUDIT_ENABLED": "true",
        "AUDIT_SPOOL_PATH": str(workspace.work / "server-spool.jsonl"),
        "STAGE2_MODE": "inprocess",
    }
    reference_env = {
        "REFERENCE_MODEL_PATH": str(workspace.reference_path),
        "REFERENCE_DATABASE_URL": workspace.database_url,
    }
    results = {}
    for name, target, environment in (
        ("service", "functions.stage1.app:app", service_env),
        ("reference", "benchmarks.reference_app:app", reference_env),
    ):
        with _server(target, environment, workers, workspace.work / f"{name}-server.log") as url:
            asyncio.run(_drive(url, warmup, concurrency=4 * workers, total=WARMUP_REQUESTS))
            asyncio.run(_drive(url, bodies, concurrency=4 * workers, total=WARMUP_REQUESTS))
            for concurrency in CONCURRENCY:
                results[(name, concurrency)] = asyncio.run(
                    _drive(url, bodies, concurrency=concurrency, total=total))
                logger.info("%s at concurrency %d: %.0f req/s, %d errors", name, concurrency,
                            results[(name, concurrency)].per_second,
                            results[(name, concurrency)].errors)

    figures = []
    for concurrency in CONCURRENCY:
        ours, theirs = results[("service", concurrency)], results[("reference", concurrency)]
        latency = summarize(ours.latencies_ms)
        reference_latency = summarize(theirs.latencies_ms)
        figure = Figure(
            GROUP, f"POST /predict, concurrency {concurrency}, {workers} workers", "req/s",
            ours.per_second, runs=ours.requests, reference=theirs.per_second,
            higher_is_better=True,
            note=f"latency median {latency.median:.1f} ms, p99 {latency.p99:.1f} ms; "
                 f"errors {ours.errors} (reference {theirs.errors}); reference latency "
                 f"median {reference_latency.median:.1f} ms",
            extra={"latency_median_ms": latency.median, "latency_p99_ms": latency.p99,
                   "errors": ours.errors, "reference_errors": theirs.errors,
                   "reference_latency_median_ms": reference_latency.median,
                   "reference_latency_p99_ms": reference_latency.p99},
        )
        if concurrency == TARGET_CONCURRENCY:
            figure.target = f">= {MIN_SPEEDUP:.0f}x reference, zero errors"
            figure.met = (figure.ratio or 0) >= MIN_SPEEDUP and ours.errors == 0
        figures.append(figure)
    return figures


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _server(target: str, environment: dict[str, str], workers: int, log: Path) -> Iterator[str]:
    """Run uvicorn on a free 127.0.0.1 port until the block ends; yield its base URL."""
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers), "--no-access-log",
               "--log-level", "warning"]
    with log.open("w") as stderr:
        # stdout carries one JSON log line per decision; it is written, then discarded.
        process = subprocess.Popen(  # noqa: S603 - fixed interpreter and arguments
            command, cwd=ROOT, env={**os.environ, **environment},
            stdout=subprocess.DEVNULL, stderr=stderr,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process, log)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n"
                               f"{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {STARTUP_TIMEOUT_SECONDS} s")


async def _drive(url: str, bodies: list[bytes], *, concurrency: int, total: int) -> LoadResult:
    """Send ``total`` POST /predict requests from ``concurrency`` concurrent tasks."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while (index := next(counter)) < total:
                started = time.perf_counter()
                try:
                    response = await client.post("/predict", content=bodies[index % len(bodies)],
                                                 headers=headers)
                    failed = response.status_code != 200
                except httpx.HTTPError:
                    failed = True
                latencies.append((time.perf_counter() - started) * 1e3)
                errors += failed

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return LoadResult(total, seconds, latencies, errors)
