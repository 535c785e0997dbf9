"""The connection pool: reuse, limits, discarding and recycling."""

from __future__ import annotations

import threading
import time

import pytest

from fraudscore.connection_pool import ConnectionPool, PoolTimeoutError
from fraudscore.exceptions import DatabaseError


class Recorder:
    """Makes numbered fake connections and records which ones were closed."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed: list[int] = []

    def connect(self) -> int:
        self.opened += 1
        return self.opened

    def close(self, connection: int) -> None:
        self.closed.append(connection)


def never(_exc: BaseException) -> bool:
    return False


def lost(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseError) and exc.connection_lost


def make_pool(recorder: Recorder, **options: float) -> ConnectionPool[int]:
    settings = {"size": 1, "max_overflow": 1, "timeout_seconds": 0.2, **options}
    return ConnectionPool(recorder.connect, recorder.close, **settings)  # type: ignore[arg-type]


def test_connection_reused() -> None:
    recorder = Recorder()
    pool = make_pool(recorder)

    with pool.connection(discard_on=never) as first:
        assert not first.reused
    with pool.connection(discard_on=never) as second:
        assert second.reused

    assert first.connection == second.connection == 1
    assert recorder.opened == 1


def test_overflow_closed_on_return() -> None:
    recorder = Recorder()
    pool = make_pool(recorder)

    with pool.connection(discard_on=never), pool.connection(discard_on=never):
        assert recorder.opened == 2

    assert recorder.closed == [1]  # returned second, when one idle connection was kept
    assert pool.idle_count() == 1


def test_exhausted_pool_times_out() -> None:
    recorder = Recorder()
    pool = make_pool(recorder, size=1, max_overflow=0, timeout_seconds=0.05)

    with pool.connection(discard_on=never):
        started = time.monotonic()
        with pytest.raises(PoolTimeoutError, match="no database connection free"), \
                pool.connection(discard_on=never):
            pass
        waited = time.monotonic() - started

    assert waited >= 0.05
    assert recorder.opened == 1


def test_lost_connection_discarded() -> None:
    recorder = Recorder()
    pool = make_pool(recorder)

    with pytest.raises(DatabaseError), pool.connection(discard_on=lost):
        raise DatabaseError("server closed the connection", connection_lost=True)
    with pool.connection(discard_on=lost) as fresh:
        pass

    assert recorder.closed == [1]
    assert fresh.connection == 2
    assert not fresh.reused


def test_server_error_keeps_connection() -> None:
    recorder = Recorder()
    pool = make_pool(recorder)

    with pytest.raises(DatabaseError), pool.connection(discard_on=lost):
        raise DatabaseError("duplicate key", sqlstate="23505")
    with pool.connection(discard_on=lost) as again:
        pass

    assert recorder.closed == []
    assert again.connection == 1


def test_broken_checkout_closed() -> None:
    recorder = Recorder()
    pool = make_pool(recorder)

    with pool.connection(discard_on=never) as checkout:
        checkout.broken = True

    assert recorder.closed == [1]
    assert pool.idle_count() == 0


def test_old_connection_recycled() -> None:
    recorder = Recorder()
    pool = make_pool(recorder, recycle_seconds=0.01)

    with pool.connection(discard_on=never):
        pass
    time.sleep(0.03)
    with pool.connection(discard_on=never) as checkout:
        pass

    assert recorder.closed == [1]
    assert checkout.connection == 2


def test_close_empties_pool() -> None:
    recorder = Recorder()
    pool = make_pool(recorder)
    with pool.connection(discard_on=never):
        pass

    pool.close()
    with pool.connection(discard_on=never):
        pass

    assert recorder.closed == [1, 2]
    assert pool.idle_count() == 0


def test_threads_never_share_connection() -> None:
    recorder = Recorder()
    pool = make_pool(recorder, size=2, max_overflow=2, timeout_seconds=5.0)
    in_use: set[int] = set()
    shared: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(200):
            with pool.connection(discard_on=never) as checkout:
                with lock:
                    if checkout.connection in in_use:
                        shared.append(checkout.connection)
                    in_use.add(checkout.connection)
                time.sleep(0)
                with lock:
                    in_use.discard(checkout.connection)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert shared == []
    assert recorder.opened - len(recorder.closed) == pool.idle_count()
    assert pool.idle_count() <= 2
