"""Figure 5: throughput of the local server with PostgreSQL audit.

uvicorn serves ``functions.stage1.app:app`` with one worker per core and the access log
off. The reference app (``benchmarks.reference_app:app``) is served the same way and
writes its own audit rows to the same database. The two servers take turns, never
running at once, for ``server_rounds`` rounds; each figure is the median round, because
the rates of a shared machine move between runs. The load generator is wrk (one thread,
one connection per concurrent client, for a fixed time per concurrency level) when it is
on PATH, and otherwise an async ``httpx.AsyncClient`` in this process, which sends a fixed
number of requests. Both count every non-200 response and every socket error. The load
generator shares the machine's cores with the server, which lowers both figures alike.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import shutil
import socket
import statistics
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
TARGET_CONCURRENCY = 16
MIN_SPEEDUP = 5.0
STARTUP_TIMEOUT_SECONDS = 120
WARMUP_REQUESTS = 200
# Each uvicorn worker scores on its event loop, so it uses one connection at a time.
SERVICE_POOL_SIZE = 2

# wrk sends POST /predict with the bodies of the file named after "--", one per line, in
# turn. Each thread counts its non-200 responses; done() adds them up and prints one JSON
# line. wrk's own times are in microseconds.
WRK_SCRIPT = r"""
threads = {}
failures = 0
local bodies = {}
local index = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
end

function request()
  index = index % #bodies + 1
  return wrk.format("POST", "/predict", {["Content-Type"] = "application/json"}, bodies[index])
end

function response(status, headers, body)
  if status ~= 200 then
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local non_200 = 0
  for _, thread in ipairs(threads) do
    non_200 = non_200 + thread:get("failures")
  end
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_200": %d, "socket_errors": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, non_200,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class LoadResult:
    """Outcome of one load level: completed requests, time, latency in ms, failed requests."""

    requests: int
    seconds: float
    latency_median_ms: float
    latency_p99_ms: float
    errors: int
    # CPU seconds used meanwhile by the uvicorn processes and by PostgreSQL (Linux only).
    server_cpu_seconds: float | None = None
    database_cpu_seconds: float | None = None

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def cpu_us_per_request(self, seconds: float | None) -> float | None:
        return None if seconds is None else seconds / self.requests * 1e6


def run(workspace: Workspace) -> list[Figure]:
    """Serve each app with uvicorn and drive it at each concurrency level."""
    if not workspace.database_url:
        return [Figure(GROUP, "server throughput", "req/s", None,
                       note="skipped: PostgreSQL not reachable")]
    workers = os.cpu_count() or 1
    bodies = [json.dumps({"features": row}).encode() for row in workspace.sample]
    # The warm-up sends uncertain transactions first, so both apps have run stage 2 in
    # every worker before the measured levels (the reference loads lazily).
    uncertain = workspace.examples.get("uncertain") or workspace.sample[0]
    warmup = [json.dumps({"features": uncertain}).encode()]
    wrk = shutil.which("wrk")
    bodies_file = workspace.work / "server-bodies.jsonl"
    bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
    script = workspace.work / "server-post.lua"
    script.write_text(WRK_SCRIPT)
    generator = "wrk" if wrk else "httpx"

    service_env = {
        "MODEL_URI": str(workspace.bundle_dir),
        "DATABASE_URL": workspace.database_url,
        "DATABASE_POOL_SIZE": str(SERVICE_POOL_SIZE),
        "AUDIT_ENABLED": "true",
        "AUDIT_SPOOL_PATH": str(workspace.work / "server-spool.jsonl"),
        "STAGE2_MODE": "inprocess",
    }
    reference_env = {
        "REFERENCE_MODEL_PATH": str(workspace.reference_path),
        "REFERENCE_DATABASE_URL": workspace.database_url,
    }
    rounds: dict[tuple[str, int], list[LoadResult]] = {}
    for round_number in range(1, workspace.mode.server_rounds + 1):
        for name, target, environment in (
            ("service", "functions.stage1.app:app", service_env),
            ("reference", "benchmarks.reference_app:app", reference_env),
        ):
            log = workspace.work / f"{name}-server-{round_number}.log"
            with _server(target, environment, workers, log) as (url, pid):
                asyncio.run(_drive(url, warmup, concurrency=4 * workers, total=WARMUP_REQUESTS))
                asyncio.run(_drive(url, bodies, concurrency=4 * workers, total=WARMUP_REQUESTS))
                for concurrency in workspace.mode.server_concurrency:
                    server_before, database_before = _tree_cpu_seconds(pid), _postgres_cpu_seconds()
                    if wrk:
                        result = _drive_wrk(wrk, url, script, bodies_file,
                                            concurrency=concurrency,
                                            seconds=workspace.mode.server_seconds)
                    else:
                        result = asyncio.run(_drive(url, bodies, concurrency=concurrency,
                                                    total=workspace.mode.server_requests))
                    result.server_cpu_seconds = _difference(_tree_cpu_seconds(pid), server_before)
                    result.database_cpu_seconds = _difference(_postgres_cpu_seconds(),
                                                              database_before)
                    rounds.setdefault((name, concurrency), []).append(result)
                    logger.info("round %d, %s at concurrency %d (%s): %.0f req/s, %d errors",
                                round_number, name, concurrency, generator,
                                result.per_second, result.errors)

    figures = []
    for concurrency in workspace.mode.server_concurrency:
        ours_rounds = rounds[("service", concurrency)]
        theirs_rounds = rounds[("reference", concurrency)]
        ours, theirs = _median_round(ours_rounds), _median_round(theirs_rounds)
        figure = Figure(
            GROUP, f"POST /predict, concurrency {concurrency}, {workers} workers", "req/s",
            ours.per_second, runs=ours.requests, reference=theirs.per_second,
            higher_is_better=True,
            note=f"{generator}; median of {len(ours_rounds)} round(s): "
                 f"{_rates(ours_rounds)} against {_rates(theirs_rounds)} req/s; latency "
                 f"median {ours.latency_median_ms:.1f} ms, p99 {ours.latency_p99_ms:.1f} ms; "
                 f"errors {sum(r.errors for r in ours_rounds)} (reference "
                 f"{sum(r.errors for r in theirs_rounds)}); reference latency median "
                 f"{theirs.latency_median_ms:.1f} ms",
            extra={"load_generator": generator,
                   "latency_median_ms": ours.latency_median_ms,
                   "latency_p99_ms": ours.latency_p99_ms,
                   "round_rates": [r.per_second for r in ours_rounds],
                   "reference_round_rates": [r.per_second for r in theirs_rounds],
                   "errors": sum(r.errors for r in ours_rounds),
                   "reference_errors": sum(r.errors for r in theirs_rounds),
                   "reference_requests": theirs.requests,
                   "reference_latency_median_ms": theirs.latency_median_ms,
                   "reference_latency_p99_ms": theirs.latency_p99_ms},
        )
        if concurrency == TARGET_CONCURRENCY:
            figure.target = f">= {MIN_SPEEDUP:.0f}x reference, zero errors"
            figure.met = ((figure.ratio or 0) >= MIN_SPEEDUP
                          and sum(r.errors for r in ours_rounds) == 0)
        figures.append(figure)
        figures.extend(_cpu_figures(concurrency, workers, ours_rounds, theirs_rounds))
    return figures


def _cpu_figures(concurrency: int, workers: int, ours: list[LoadResult],
                 theirs: list[LoadResult]) -> list[Figure]:
    """CPU time per request of the uvicorn processes and of PostgreSQL, medians over rounds.

    Unlike requests per second, these do not depend on how the kernel spreads the
    connections over the workers or on what else the machine runs meanwhile.
    """
    figures = []
    for label, attribute in (("uvicorn workers", "server_cpu_seconds"),
                             ("PostgreSQL server", "database_cpu_seconds")):
        ours_values = [r.cpu_us_per_request(getattr(r, attribute)) for r in ours]
        theirs_values = [r.cpu_us_per_request(getattr(r, attribute)) for r in theirs]
        ours_known = [value for value in ours_values if value is not None]
        theirs_known = [value for value in theirs_values if value is not None]
        if len(ours_known) < len(ours) or len(theirs_known) < len(theirs):
            continue
        figures.append(Figure(
            GROUP, f"CPU per request, {label}, concurrency {concurrency}, {workers} workers",
            "us", statistics.median(ours_known), runs=len(ours),
            reference=statistics.median(theirs_known),
            note="user + system time from /proc during the load level, per completed request",
        ))
    return figures


def _tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` and its descendants so far, or None off Linux."""
    try:
        pending, total = [pid], 0.0
        while pending:
            current = pending.pop()
            total += _process_cpu_seconds(current)
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pending.extend(int(child) for child in children)
    except (OSError, ValueError):
        return None
    return total


def _postgres_cpu_seconds() -> float | None:
    """User + system CPU seconds of the PostgreSQL server so far, or None.

    Backends come and go as clients connect, so the sum covers the live ``postgres``
    processes plus the CPU of the ended ones, which the postmaster reaped and the kernel
    added to its children's times.
    """
    total, found = 0.0, False
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            total += _process_cpu_seconds(int(entry.name), with_reaped_children=True)
            found = True
        except (OSError, ValueError):
            continue  # the process ended meanwhile
    return total if found else None


def _process_cpu_seconds(pid: int, *, with_reaped_children: bool = False) -> float:
    # Fields 14-17 of /proc/PID/stat (utime, stime, cutime, cstime), counted after the
    # parenthesized command name.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _difference(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _median_round(results: list[LoadResult]) -> LoadResult:
    """Return the round with the median rate (the lower middle one for an even count)."""
    ordered = sorted(results, key=lambda result: result.per_second)
    return ordered[(len(ordered) - 1) // 2]


def _rates(results: list[LoadResult]) -> str:
    return "/".join(f"{result.per_second:.0f}" for result in results)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _server(target: str, environment: dict[str, str], workers: int,
            log: Path) -> Iterator[tuple[str, int]]:
    """Run uvicorn on a free 127.0.0.1 port until the block ends; yield its URL and PID."""
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
            yield url, process.pid
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
    latency = summarize(latencies)
    return LoadResult(total, seconds, latency.median, latency.p99, errors)


def _drive_wrk(wrk: str, url: str, script: Path, bodies_file: Path, *, concurrency: int,
               seconds: float) -> LoadResult:
    """Run wrk with ``concurrency`` connections for ``seconds`` and read its JSON summary."""
    command = [wrk, "--threads", "1", "--connections", str(concurrency),
               "--duration", f"{seconds:g}s", "--timeout", "30s", "--script", str(script),
               f"{url}/predict", "--", str(bodies_file)]
    completed = subprocess.run(  # noqa: S603 - fixed program and arguments
        command, capture_output=True, text=True, timeout=seconds + 60, check=False,
    )
    summary_line = completed.stdout.strip().splitlines()[-1:] or [""]
    if completed.returncode != 0 or not summary_line[0].startswith("{"):
        raise RuntimeError(f"wrk failed ({completed.returncode}):\n"
                           f"{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}")
    summary = json.loads(summary_line[0])
    if summary["requests"] == 0:
        raise RuntimeError(f"wrk got no response from {url} in {seconds:g} s")
    return LoadResult(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        latency_median_ms=summary["p50_us"] / 1e3,
        latency_p99_ms=summary["p99_us"] / 1e3,
        errors=summary["non_200"] + summary["socket_errors"],
    )
