"""A small thread-safe pool of database connections, one pool per process.

A Lambda container serves one request at a time and keeps one connection. A uvicorn
worker may run requests in its thread pool and then needs a few. The pool keeps at most
``size`` idle connections and opens up to ``max_overflow`` more under load. It waits at
most ``timeout_seconds`` for a free one and replaces connections older than
``recycle_seconds``. When the caller marks an error as a lost connection, the pool
closes that connection instead of keeping it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fraudscore.exceptions import DatabaseError

logger = logging.getLogger(__name__)

class PoolTimeoutError(DatabaseError):
    """No connection became free within the pool's timeout."""


@dataclass
class Checkout[ConnectionT]:
    """A connection lent by the pool.

    ``reused`` is True when it had served before. Setting ``broken`` makes the pool
    close it on return instead of keeping it.
    """

    connection: ConnectionT
    reused: bool
    created_at: float = field(default_factory=time.monotonic)
    broken: bool = False


class ConnectionPool[ConnectionT]:
    """Lend connections made by ``connect`` and take them back.

    Parameters
    ----------
    connect : callable
        Opens a new connection; may raise ``DatabaseError``.
    close : callable
        Closes a connection; errors it raises are logged and ignored.
    size : int
        Idle connections kept for reuse.
    max_overflow : int
        Connections allowed beyond ``size`` while all others are in use.
    timeout_seconds : float
        How long ``connection()`` waits for a free slot before raising PoolTimeoutError.
    recycle_seconds : float or None
        Connections older than this are closed at checkout and replaced.
    """

    def __init__(
        self,
        connect: Callable[[], ConnectionT],
        close: Callable[[ConnectionT], None],
        *,
        size: int,
        max_overflow: int,
        timeout_seconds: float,
        recycle_seconds: float | None = None,
    ) -> None:
        if size < 1 or max_overflow < 0:
            raise ValueError(
                f"pool size must be >= 1 and overflow >= 0, got {size} and {max_overflow}"
            )
        self._connect = connect
        self._close = close
        self.size = size
        self.max_overflow = max_overflow
        self.timeout_seconds = timeout_seconds
        self.recycle_seconds = recycle_seconds
        self._slots = threading.BoundedSemaphore(size + max_overflow)
        self._idle: deque[Checkout[ConnectionT]] = deque()
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def connection(
        self, *, discard_on: Callable[[BaseException], bool]
    ) -> Iterator[Checkout[ConnectionT]]:
        """Lend a connection for the ``with`` block.

        When the block raises an exception for which ``discard_on`` returns True, the
        connection is closed instead of being kept, so the next checkout opens a new one.
        """
        if not self._slots.acquire(timeout=self.timeout_seconds):
            raise PoolTimeoutError(
                f"no database connection free within {self.timeout_seconds:g} s "
                f"(pool size {self.size}, overflow {self.max_overflow})"
            )
        checkout: Checkout[ConnectionT] | None = None
        try:
            checkout = self._take()
            yield checkout
        except BaseException as exc:
            if checkout is not None and discard_on(exc):
                self._discard(checkout.connection)
                checkout = None
            raise
        finally:
            if checkout is not None and checkout.broken:
                self._discard(checkout.connection)
            elif checkout is not None:
                self._give_back(checkout)
            self._slots.release()

    def close(self) -> None:
        """Close every idle connection; connections in use are closed when returned."""
        with self._lock:
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
        for checkout in idle:
            self._discard(checkout.connection)

    def idle_count(self) -> int:
        """Number of idle connections kept for reuse."""
        return len(self._idle)

    def _take(self) -> Checkout[ConnectionT]:
        while True:
            with self._lock:
                idle_checkout = self._idle.pop() if self._idle else None
            if idle_checkout is None:
                return Checkout(self._connect(), reused=False)
            age = time.monotonic() - idle_checkout.created_at
            if self.recycle_seconds is not None and age > self.recycle_seconds:
                self._discard(idle_checkout.connection)
                continue
            idle_checkout.reused = True
            return idle_checkout

    def _give_back(self, checkout: Checkout[ConnectionT]) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.size:
                self._idle.append(checkout)
                return
        self._discard(checkout.connection)

    def _discard(self, connection: ConnectionT) -> None:
        try:
            self._close(connection)
        except Exception as exc:
            logger.debug("closing a database connection failed: %s", type(exc).__name__)
