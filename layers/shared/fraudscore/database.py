"""The audit database: PostgreSQL through pg8000, or SQLite for the local demo.

One :class:`Database` per process lends pooled connections. PostgreSQL statements go
through pg8000's simple query protocol with parameters rendered client-side
(:mod:`fraudscore.sql_literals`), so each statement costs one round trip. SQLite
statements use the ``sqlite3`` module's own parameter binding.

With ``DATABASE_SECRET_ARN`` set (AWS), the user name and password come from Secrets
Manager, read once per container, and connections go to ``DATABASE_HOST`` (the RDS
Proxy endpoint) with TLS. RDS rotates the managed password, so a login rejected for its
password reads the secret again and retries once. Otherwise ``DATABASE_URL`` is used.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import ssl
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol
from urllib.parse import quote, unquote, urlsplit

from fraudscore.connection_pool import ConnectionPool
from fraudscore.database_secret import INVALID_PASSWORD, SecretCredentials
from fraudscore.exceptions import ConfigurationError, DatabaseError, FraudScoreError
from fraudscore.settings import Env, Settings
from fraudscore.sql_literals import check_server_quoting, render_row, render_statement

logger = logging.getLogger(__name__)

Dialect = Literal["postgresql", "sqlite"]
Rows = list[tuple[Any, ...]]
_SCHEMES: dict[str, Dialect] = {
    "postgresql": "postgresql",
    "postgresql+pg8000": "postgresql",
    "postgres": "postgresql",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
}
# SQLSTATE classes and codes after which the server has closed the session.
_CONNECTION_LOST_STATES = ("08", "57P01", "57P02", "57P03")
# Connections older than this are replaced at checkout (RDS Proxy idles clients out).
RECYCLE_SECONDS = 300.0


@dataclass(frozen=True)
class DatabaseAddress:
    """Location of the audit database: a PostgreSQL server or a SQLite file."""

    dialect: Dialect
    database: str
    host: str | None = None
    port: int = 5432
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    def render(self) -> str:
        """Return the address as a URL with the password masked, for logs."""
        if self.dialect == "sqlite":
            return f"sqlite:///{self.database}"
        credentials = quote(self.user or "", safe="")
        if self.password is not None:
            credentials += ":***"
        return f"postgresql://{credentials}@{self.host}:{self.port}/{self.database}"


def parse_database_url(url: str) -> DatabaseAddress:
    """Parse ``postgresql://user:password@host:port/name`` or ``sqlite:///path``.

    ``postgresql+pg8000://`` is accepted as a synonym. Query parameters are rejected,
    so an option such as ``?sslmode=require`` is never silently ignored: TLS is set by
    ``DATABASE_SSL``.

    Raises
    ------
    ConfigurationError
        If the URL has another scheme, query parameters, or no database name.
    """
    parts = urlsplit(url)
    dialect = _SCHEMES.get(parts.scheme.lower())
    if dialect is None:
        scheme = f"{parts.scheme}://..." if parts.scheme else repr(url)
        raise ConfigurationError(
            f"{Env.DATABASE_URL} must start with postgresql:// or sqlite:///, got {scheme}"
        )
    if parts.query:
        raise ConfigurationError(
            f"{Env.DATABASE_URL} must not have query parameters ({parts.query.split('=')[0]}"
            f"=...); set TLS with {Env.DATABASE_SSL} and timeouts with "
            f"{Env.DATABASE_CONNECT_TIMEOUT_SECONDS}"
        )
    if dialect == "sqlite":
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else ""
        if not path or path == ":memory:" or parts.netloc:
            raise ConfigurationError(
                f"{Env.DATABASE_URL} for SQLite must name a file: sqlite:///audit.db "
                "(relative) or sqlite:////var/data/audit.db (absolute)"
            )
        return DatabaseAddress("sqlite", path)

    name = unquote(parts.path.lstrip("/"))
    if not name or not parts.hostname:
        raise ConfigurationError(
            f"{Env.DATABASE_URL} must name a host and a database: "
            "postgresql://user@host:5432/database"
        )
    try:
        port = parts.port or 5432
    except ValueError as exc:
        raise ConfigurationError(f"{Env.DATABASE_URL} has an invalid port") from exc
    return DatabaseAddress(
        "postgresql",
        name,
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


class Connection(Protocol):
    """Connection interface the audit store uses, for either dialect."""

    def query(self, template: str, params: Mapping[str, Any] | None = None) -> Rows:
        """Run one statement with ``:name`` placeholders; return its rows (or [])."""
        ...

    def insert_rows(self, head: str, rows: Sequence[Sequence[Any]], tail: str) -> Rows:
        """Run ``head VALUES (row), ... tail`` for ``rows``; return the rows it returned."""
        ...


class PostgresConnection:
    """A pg8000 connection; statements go out as one simple-protocol query each."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def query(self, template: str, params: Mapping[str, Any] | None = None) -> Rows:
        with _unstorable_values():
            sql = render_statement(template, params or {})
        return self.execute(sql)

    def insert_rows(self, head: str, rows: Sequence[Sequence[Any]], tail: str) -> Rows:
        with _unstorable_values():
            values = ", ".join(render_row(row) for row in rows)
        return self.execute(f"{head} VALUES {values} {tail}")

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        """Send ``sql`` (already rendered) and return its rows."""
        import pg8000.exceptions

        try:
            rows = self.raw.run(sql)
        except pg8000.exceptions.DatabaseError as exc:
            raise _postgres_error(exc) from exc
        except (pg8000.exceptions.InterfaceError, OSError) as exc:
            raise DatabaseError(f"connection to PostgreSQL lost: {type(exc).__name__}: {exc}",
                                connection_lost=True) from exc
        return [tuple(row) for row in rows] if rows else []

    @property
    def in_transaction(self) -> bool:
        # pg8000 keeps the status byte of the server's last ReadyForQuery ("I" = idle).
        return getattr(self.raw, "_transaction_status", b"I") != b"I"

    def close(self) -> None:
        self.raw.close()


class SqliteConnection:
    """A ``sqlite3`` connection in autocommit mode, with parameters bound by sqlite3."""

    def __init__(self, raw: sqlite3.Connection) -> None:
        self.raw = raw

    def query(self, template: str, params: Mapping[str, Any] | None = None) -> Rows:
        with _unstorable_values():
            values = {name: _sqlite_value(value) for name, value in (params or {}).items()}
        return self._run(template, values)

    def insert_rows(self, head: str, rows: Sequence[Sequence[Any]], tail: str) -> Rows:
        # sqlite3 cannot return RETURNING rows from executemany, and each statement is
        # an in-process call, so one statement per row costs no round trips.
        if not rows:
            return []
        placeholders = ", ".join("?" for _ in rows[0])
        statement = f"{head} VALUES ({placeholders}) {tail}"
        with _unstorable_values():
            bound = [[_sqlite_value(value) for value in row] for row in rows]
        returned: list[tuple[Any, ...]] = []
        for values in bound:
            returned.extend(self._run(statement, values))
        return returned

    def _run(self, statement: str, params: Any) -> list[tuple[Any, ...]]:
        try:
            return [tuple(row) for row in self.raw.execute(statement, params).fetchall()]
        except sqlite3.ProgrammingError as exc:
            # Raised for a closed connection, among others.
            raise DatabaseError(f"SQLite statement failed: {exc}", connection_lost=True) from exc
        except sqlite3.Error as exc:
            raise DatabaseError(f"SQLite statement failed: {type(exc).__name__}: {exc}") from exc

    @property
    def in_transaction(self) -> bool:
        return self.raw.in_transaction

    def close(self) -> None:
        self.raw.close()


@contextmanager
def _unstorable_values() -> Iterator[None]:
    """Turn a value that cannot be written (NaN, NUL, an unknown type) into DatabaseError."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        raise DatabaseError(f"a value cannot be stored: {exc}") from exc


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, allow_nan=False)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _postgres_error(exc: Exception) -> DatabaseError:
    details = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    sqlstate = details.get("C")
    message = details.get("M", str(exc))
    lost = isinstance(sqlstate, str) and sqlstate.startswith(_CONNECTION_LOST_STATES)
    return DatabaseError(f"PostgreSQL error {sqlstate}: {message}", sqlstate=sqlstate,
                         connection_lost=lost)


def _discard_after(exc: BaseException) -> bool:
    # Errors of this package leave the connection usable, except a lost connection.
    # Anything else (KeyboardInterrupt in the middle of a message) leaves it unknown.
    if isinstance(exc, DatabaseError):
        return exc.connection_lost
    return not isinstance(exc, FraudScoreError)


class Database:
    """Pooled connections to the audit database, created once per process."""

    def __init__(self, address: DatabaseAddress, pool: ConnectionPool[Any]) -> None:
        self.address = address
        self.pool = pool

    @property
    def dialect(self) -> Dialect:
        return self.address.dialect

    @contextmanager
    def connection(self) -> Iterator[tuple[Connection, bool]]:
        """Lend a connection; yields it and whether it had been used before.

        A connection that was left inside a transaction (a ROLLBACK that failed) is
        closed on return, as is one whose error marks it lost.
        """
        with self.pool.connection(discard_on=_discard_after) as checkout:
            connection = checkout.connection
            yield connection, checkout.reused
            if connection.in_transaction:
                logger.error("audit connection returned inside a transaction; closing it")
                checkout.broken = True

    def close(self) -> None:
        """Close the idle connections (the process is shutting down)."""
        self.pool.close()

    def __repr__(self) -> str:
        return f"Database({self.address.render()})"


def open_audit_database(settings: Settings, secrets_client: Any = None) -> Database:
    """Create the process-wide audit database from settings.

    Reads the Secrets Manager secret when one is configured; connects on first use.

    Raises
    ------
    ConfigurationError
        If the URL, the secret or the settings are invalid.
    """
    credentials = None
    if settings.database_secret_arn:
        if not settings.database_host:
            raise ConfigurationError(
                f"{Env.DATABASE_HOST} is required with {Env.DATABASE_SECRET_ARN}"
            )
        credentials = SecretCredentials(settings.database_secret_arn, secrets_client)
        # Read now, so a missing or malformed secret fails the container's start (and
        # shows on /health) instead of its first request.
        secret = credentials.get()
        address = DatabaseAddress("postgresql", settings.database_name,
                                  host=settings.database_host, port=settings.database_port,
                                  user=secret["username"])
    else:
        address = parse_database_url(settings.database_url)

    if address.dialect == "sqlite":
        database = Database(address, ConnectionPool(
            lambda: _connect_sqlite(address, settings.database_connect_timeout_seconds),
            SqliteConnection.close,
            size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            timeout_seconds=settings.database_pool_timeout_seconds,
        ))
    else:
        # False, not None: pg8000 takes None as "try TLS without verifying the server,
        # fall back to plain text", which costs a round trip and a CA bundle load.
        ssl_context: ssl.SSLContext | bool = (
            ssl.create_default_context() if settings.database_ssl else False
        )
        database = Database(address, ConnectionPool(
            lambda: _connect_postgres(address, credentials, ssl_context,
                                      settings.database_connect_timeout_seconds),
            PostgresConnection.close,
            size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            timeout_seconds=settings.database_pool_timeout_seconds,
            recycle_seconds=RECYCLE_SECONDS,
        ))
    logger.info("audit database configured: %s", address.render())
    return database


def open_database_url(url: str, **settings: Any) -> Database:
    """Open a database from a URL with default pool settings (tools and tests)."""
    return open_audit_database(Settings.from_env({}, database_url=url, **settings))


def _connect_sqlite(address: DatabaseAddress, timeout: float) -> SqliteConnection:
    try:
        raw = sqlite3.connect(address.database, timeout=timeout, check_same_thread=False,
                              isolation_level=None)
        # WAL lets readers (health checks, operators) run beside the writer.
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open SQLite database {address.database}: {exc}",
                            connection_lost=True) from exc
    return SqliteConnection(raw)


def _connect_postgres(
    address: DatabaseAddress,
    credentials: SecretCredentials | None,
    ssl_context: ssl.SSLContext | bool,
    timeout: float,
) -> PostgresConnection:
    import pg8000.exceptions
    import pg8000.native

    def connect(user: str | None, password: str | None) -> PostgresConnection:
        try:
            raw = pg8000.native.Connection(
                user, host=address.host, port=address.port, database=address.database,
                password=password, ssl_context=ssl_context, timeout=timeout,
                application_name="fraudscore",
            )
        except pg8000.exceptions.DatabaseError as exc:
            raise _postgres_error(exc) from exc
        except (pg8000.exceptions.InterfaceError, OSError) as exc:
            raise DatabaseError(
                f"cannot connect to PostgreSQL at {address.host}:{address.port}: "
                f"{type(exc).__name__}: {exc}", connection_lost=True,
            ) from exc
        connection = PostgresConnection(raw)
        try:
            check_server_quoting(raw.parameter_statuses)
        except DatabaseError:
            connection.close()
            raise
        return connection

    if credentials is None:
        return connect(address.user, address.password)
    secret = credentials.get()
    try:
        return connect(secret["username"], secret["password"])
    except DatabaseError as exc:
        if exc.sqlstate != INVALID_PASSWORD:
            raise
    logger.warning("database rejected the cached password; reading secret %s again",
                   credentials.secret_arn)
    secret = credentials.refresh()
    return connect(secret["username"], secret["password"])
