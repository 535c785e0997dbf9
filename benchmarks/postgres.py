"""PostgreSQL for the benchmarks: a reachability check, a throw-away database and round trips."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from benchmarks.measure import summarize, time_calls

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3


def server_version(url: str) -> str | None:
    """Return the server's ``version()`` string, or None when it cannot be reached."""
    engine = create_engine(url, poolclass=NullPool,
                           connect_args={"timeout": CONNECT_TIMEOUT_SECONDS})
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("select version()")).scalar_one())
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("PostgreSQL at %s is not reachable: %s",
                       make_url(url).render_as_string(hide_password=True), exc)
        return None
    finally:
        engine.dispose()


@contextmanager
def temporary_database(url: str) -> Iterator[str]:
    """Create a fresh database on the server of ``url``, yield its URL, drop it afterwards.

    ``DROP DATABASE ... WITH (FORCE)`` (PostgreSQL 13 and later) also ends connections
    that a stopped server process may have left behind.
    """
    server = make_url(url)
    name = f"fraudbench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    logger.info("created PostgreSQL database %s", name)
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        logger.info("dropped PostgreSQL database %s", name)


def round_trips(url: str, runs: int) -> dict[str, Any]:
    """Time bare pg8000 statements with autocommit on one connection, in milliseconds.

    ``SELECT 1`` is the network and protocol round trip. An ``INSERT`` commits, and with
    ``synchronous_commit = on`` the commit waits for the WAL flush (fsync) to disk; with
    ``synchronous_commit = off`` it does not. The difference is the disk's share.
    """
    import pg8000.dbapi

    parsed = make_url(url)
    connection = pg8000.dbapi.connect(
        user=parsed.username or "postgres", password=parsed.password,
        host=parsed.host or "127.0.0.1", port=parsed.port or 5432,
        database=parsed.database, timeout=CONNECT_TIMEOUT_SECONDS,
    )
    connection.autocommit = True
    cursor = connection.cursor()
    try:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_round_trip "
                       "(id bigserial PRIMARY KEY, payload text NOT NULL)")
        payload = "x" * 600  # about the size of one audit row's JSON features

        def select_one(_i: int) -> None:
            cursor.execute("SELECT 1")
            cursor.fetchall()

        def insert_row(_i: int) -> None:
            cursor.execute("INSERT INTO bench_round_trip (payload) VALUES (%s)", (payload,))

        results = {"select": summarize(time_calls(select_one, runs, warmup=20))}
        cursor.execute("SET synchronous_commit = on")
        results["insert_sync"] = summarize(time_calls(insert_row, runs, warmup=20))
        cursor.execute("SET synchronous_commit = off")
        results["insert_async"] = summarize(time_calls(insert_row, runs, warmup=20))
        cursor.execute("SHOW wal_sync_method")
        sync_method = cursor.fetchone()[0]
    finally:
        cursor.close()
        connection.close()
    return {**results, "wal_sync_method": sync_method}
