"""Picking up a newly published bundle in a running process, or refusing it.

With ``BUNDLE_REFRESH_SECONDS`` > 0, a serving process checks its ``MODEL_URI`` at most
that often. A new version is loaded and verified in full before it replaces the current
one. A bundle that fails verification, has an unsupported format version, or whose
feature schema differs from the one being served (callers would send the wrong features)
is refused: the process keeps serving its current bundle and reports the refusal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fraudscore.bundle import Bundle, load_bundle
from fraudscore.exceptions import BundleError
from fraudscore.storage import open_store

logger = logging.getLogger(__name__)

# A check forced by a caller that already serves a newer version (stage 2 receiving a
# request for it) still waits this long after the previous check.
FORCED_CHECK_SECONDS = 5.0


@dataclass(frozen=True)
class Refusal:
    """A bundle that was not taken into service, and why."""

    location: str
    reason: str
    at: float


class BundleWatcher:
    """Checks ``uri`` every ``interval_seconds`` for a bundle version other than the current.

    Parameters
    ----------
    uri : str
        The ``MODEL_URI`` the process started with.
    interval_seconds : float
        Minimum time between checks; 0 disables checking.
    """

    def __init__(
        self,
        uri: str,
        interval_seconds: float,
        *,
        s3_client: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.uri = uri
        self.interval_seconds = interval_seconds
        self.s3_client = s3_client
        self.clock = clock
        self.last_refusal: Refusal | None = None
        self._next_check = clock() + interval_seconds
        self._last_check = clock()
        self._lock = threading.Lock()

    def poll(self, current: Bundle, *, force: bool = False) -> Bundle | None:
        """Return a verified replacement for ``current`` when one is due and valid, else None.

        ``force`` checks before the interval is over, but not within
        :data:`FORCED_CHECK_SECONDS` of the previous check.
        """
        if self.interval_seconds <= 0:
            return None
        due = self._last_check + FORCED_CHECK_SECONDS if force else self._next_check
        if self.clock() < due:
            return None
        if not self._lock.acquire(blocking=False):
            return None  # another thread is checking
        try:
            self._last_check = self.clock()
            self._next_check = self._last_check + self.interval_seconds
            return self._check(current)
        finally:
            self._lock.release()

    def _check(self, current: Bundle) -> Bundle | None:
        try:
            store = open_store(self.uri, s3_client=self.s3_client)
            candidate = load_bundle(store)
        except BundleError as exc:
            self._refuse(self.uri, str(exc))
            return None
        if candidate.version == current.version:
            return None
        if candidate.schema != current.schema:
            self._refuse(candidate.location,
                         f"bundle {candidate.version} has a different feature schema from the "
                         f"served bundle {current.version}; deploy it with a new release")
            return None
        logger.info("switching from bundle %s to %s", current.version, candidate.version)
        self.last_refusal = None
        return candidate

    def _refuse(self, location: str, reason: str) -> None:
        logger.error("rejected model bundle at %s, keeping the current one: %s", location, reason)
        self.last_refusal = Refusal(location=location, reason=reason, at=time.time())
