"""Figures, timing loops and summaries shared by the benchmark groups."""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    """One row of the results table.

    ``median`` and ``p99`` are in ``unit``; ``reference`` is the median of the usual
    approach measured the same way. ``ratio`` is how many times better this service is
    than the reference: reference / median for times and sizes, median / reference for
    rates (``higher_is_better``).
    """

    group: str
    name: str
    unit: str
    median: float | None
    runs: int | None = None
    p99: float | None = None
    reference: float | None = None
    higher_is_better: bool = False
    target: str | None = None
    met: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if not self.median or not self.reference:
            return None
        if self.higher_is_better:
            return self.median / self.reference
        return self.reference / self.median

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass(frozen=True)
class Summary:
    """Median and 99th percentile (nearest rank) of a list of samples."""

    runs: int
    median: float
    p99: float


def summarize(samples: Sequence[float]) -> Summary:
    """Summarize ``samples``; raises ValueError on an empty sequence."""
    if not samples:
        raise ValueError("cannot summarize an empty list of samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(0.99 * len(ordered)))
    return Summary(len(ordered), statistics.median(ordered), ordered[rank - 1])


def time_calls(
    call: Callable[[int], object], runs: int, *, warmup: int = 0, scale: float = 1e3
) -> list[float]:
    """Call ``call(i)`` ``warmup`` times untimed, then ``runs`` times timed.

    Returns the duration of each timed call in seconds times ``scale`` (ms by default).
    """
    for i in range(warmup):
        call(i)
    samples = []
    clock = time.perf_counter_ns
    factor = scale / 1e9
    for i in range(runs):
        started = clock()
        call(i)
        samples.append((clock() - started) * factor)
    return samples


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null, so that handler log lines are written but not shown.

    The handlers log one JSON line per decision to stdout, as they do in Lambda; the cost
    of writing them stays in the measurement, only the terminal is spared.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


@contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
