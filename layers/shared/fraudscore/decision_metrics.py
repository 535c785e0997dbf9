"""Decision metrics, counted in memory and written as CloudWatch EMF records on flush.

Adding a request's metrics to Powertools' ``Metrics`` and flushing them as one EMF line
per request costs more CPU than scoring the transaction, because Powertools validates
every metric and JSON-encodes the whole record each time. :class:`DecisionMetrics` adds
each request's figures to counters under a lock, and :meth:`DecisionMetrics.flush`
writes one EMF line with the sums. Count metrics keep their ``Sum`` in CloudWatch.
``Stage2Latency`` keeps every value, so its percentiles are unchanged. ``SampleCount``
of a count metric becomes the number of flushes.

The stage-1 Lambda handler flushes at the end of every invocation, before Lambda may
freeze the container. A uvicorn worker flushes every ``FLUSH_INTERVAL_SECONDS`` from a
task of the app's lifespan, and once more at shutdown.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Protocol

from fraudscore.observability import metrics as powertools_metrics

FLUSH_INTERVAL_SECONDS = 1.0

# Written on every flush that follows a request, zero or not, so dashboards see zeros.
ALWAYS_WRITTEN = ("Decisions", "Stage1Decisions", "Stage2Decisions", "Escalations")
# Written only when not zero.
WRITTEN_WHEN_SEEN = ("Stage2Errors", "DegradedDecisions", "AuditWriteFailures",
                     "AuditFallbackWrites")
STAGE2_LATENCY = "Stage2Latency"
_KNOWN = frozenset({*ALWAYS_WRITTEN, *WRITTEN_WHEN_SEEN})


class MetricsSink(Protocol):
    """The part of Powertools' ``Metrics`` that flushing uses."""

    def add_metric(self, name: str, unit: str, value: float) -> None: ...

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None: ...


class DecisionMetrics:
    """Thread-safe counters of one serving process, flushed as one EMF record.

    Parameters
    ----------
    sink : MetricsSink
        Powertools' ``Metrics`` (the default) or a test double.
    """

    def __init__(self, sink: MetricsSink | None = None) -> None:
        self.sink: MetricsSink = sink if sink is not None else powertools_metrics
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._stage2_latency_ms: list[float] = []

    def add(self, counts: dict[str, int], *, stage2_latency_ms: float | None = None) -> None:
        """Add one request's counts (names of ``ALWAYS_WRITTEN``/``WRITTEN_WHEN_SEEN``)."""
        unknown = counts.keys() - _KNOWN
        if unknown:
            raise ValueError(f"unknown decision metric(s): {sorted(unknown)}")
        with self._lock:
            self._counts.update(counts)
            if stage2_latency_ms is not None:
                self._stage2_latency_ms.append(stage2_latency_ms)

    def flush(self) -> None:
        """Write the counts added since the last flush as one EMF line; nothing if none."""
        with self._lock:
            # A request adds every count it names, zeros included, so the keys show it.
            if not self._counts and not self._stage2_latency_ms:
                return
            counts, self._counts = self._counts, Counter()
            latencies, self._stage2_latency_ms = self._stage2_latency_ms, []

            # Still under the lock: Powertools' Metrics keeps one metric set per process.
            # It writes a record by itself whenever a metric reaches 100 values (the EMF
            # limit), so the latencies go first and the counts keep the last record from
            # being empty.
            for value in latencies:
                self.sink.add_metric(name=STAGE2_LATENCY, unit="Milliseconds", value=value)
            for name in ALWAYS_WRITTEN:
                self.sink.add_metric(name=name, unit="Count", value=counts[name])
            for name in WRITTEN_WHEN_SEEN:
                if counts[name]:
                    self.sink.add_metric(name=name, unit="Count", value=counts[name])
            self.sink.flush_metrics(raise_on_empty_metrics=True)
