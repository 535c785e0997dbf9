"""Description of the machine and software a benchmark run used."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "numpy", "scipy", "pandas", "scikit-learn", "xgboost-cpu", "joblib", "fastapi",
    "starlette", "pydantic", "mangum", "uvicorn", "uvloop", "httptools", "httpx", "SQLAlchemy",
    "pg8000", "aws-lambda-powertools",
)


def cpu_model() -> str:
    """Return the first ``model name`` of /proc/cpuinfo, or the platform's processor name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    """Return MemTotal of /proc/meminfo in GiB, or None when it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except (OSError, ValueError):
        pass
    return None


def package_versions() -> dict[str, str]:
    """Return the installed version of each package in ``PACKAGES`` ("missing" if absent)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def interpreter_speed_ms(runs: int = 5) -> float:
    """Return the median time of a fixed pure-Python workload, in milliseconds.

    The workload (one million loop steps with integer arithmetic and dictionary updates)
    does the kind of work that imports and request handling do, and no I/O. Runs on
    different machines compare by it: twice the time means an interpreter half as fast.
    """
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        counts: dict[int, int] = {}
        for step in range(1_000_000):
            key = step % 97
            counts[key] = counts.get(key, 0) + step * 3
        samples.append((time.perf_counter() - started) * 1e3)
    return statistics.median(samples)


def describe() -> dict[str, Any]:
    """Return cores, memory, CPU model, OS, Python and package versions."""
    return {
        "cores": os.cpu_count(),
        "memory_gib": memory_gib(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
    }
