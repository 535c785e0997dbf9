"""A per-process circuit breaker in front of stage 2."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CircuitBreaker:
    """Stops calling a failing dependency for a cool-down period.

    After ``threshold`` consecutive failures the breaker opens: :meth:`allow` returns
    False until ``cooldown_seconds`` have passed. Then one trial call is let through
    (half-open); its success closes the breaker, its failure opens it again.

    Parameters
    ----------
    threshold : int
        Consecutive failures that open the breaker; 0 disables it.
    cooldown_seconds : float
        How long the breaker stays open.
    clock : callable
        Monotonic time source in seconds, replaceable in tests.
    """

    def __init__(
        self,
        threshold: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._opened_at is not None

    def allow(self) -> bool:
        """Return True when a call may go through now."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at < self.cooldown_seconds or self._trial_in_flight:
                return False
            self._trial_in_flight = True
            return True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False

    def record_failure(self) -> bool:
        """Count a failure; return True when this failure opened the breaker."""
        with self._lock:
            self._failures += 1
            self._trial_in_flight = False
            if self.threshold and self._failures >= self.threshold:
                opened = self._opened_at is None
                self._opened_at = self._clock()
                return opened
            return False
