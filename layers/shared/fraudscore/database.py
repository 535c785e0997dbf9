"""Database engines for the audit trail: one pooled engine per process.

With ``DATABASE_SECRET_ARN`` set (AWS), the user name and password come from Secrets
Manager, read once per container, and the engine connects to ``DATABASE_HOST`` (the RDS
Proxy endpoint) with TLS. RDS rotates the managed password, so a login rejected for its
password makes the engine read the secret again and retry once. Otherwise
``DATABASE_URL`` is used as given.
"""

from __future__ import annotations

import json
import logging
import ssl
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine import make_url

from fraudscore.exceptions import ConfigurationError
from fraudscore.settings import Env, Settings

logger = logging.getLogger(__name__)


def read_database_secret(secret_arn: str, client: Any = None) -> dict[str, Any]:
    """Fetch the ``username``/``password`` secret that RDS manages for the database.

    This module never logs the secret value, and its error messages name only the ARN.
    NOTE: botocore logs whole response bodies at DEBUG level, the secret included, so
    the ``botocore`` loggers must stay at INFO or above wherever this runs.

    Raises
    ------
    ConfigurationError
        If Secrets Manager cannot return the secret, or its value is not a JSON object
        with string ``username`` and ``password`` keys.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    if client is None:
        import boto3

        client = boto3.client("secretsmanager")
    try:
        response = client.get_secret_value(SecretId=secret_arn)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "ClientError")
        raise ConfigurationError(f"cannot read secret {secret_arn}: {code}") from exc
    except BotoCoreError as exc:
        raise ConfigurationError(f"cannot read secret {secret_arn}: {exc}") from exc

    try:
        secret = json.loads(response["SecretString"])
        credentials_valid = all(isinstance(secret[key], str) for key in ("username", "password"))
    except (KeyError, TypeError, ValueError):
        credentials_valid = False
    if not credentials_valid:
        # Raised outside the except block, so no chained exception carries the secret's text.
        raise ConfigurationError(
            f"secret {secret_arn} must be JSON with string 'username' and 'password' keys"
        )
    return dict(secret)


class SecretCredentials:
    """User name and password from a Secrets Manager secret, cached until a login fails."""

    def __init__(self, secret_arn: str, client: Any = None) -> None:
        self.secret_arn = secret_arn
        self.client = client
        self._secret: dict[str, Any] | None = None

    def get(self) -> dict[str, Any]:
        if self._secret is None:
            self._secret = read_database_secret(self.secret_arn, self.client)
            logger.info("read database credentials from secret %s", self.secret_arn)
        return self._secret

    def refresh(self) -> dict[str, Any]:
        self._secret = None
        return self.get()


# SQLSTATE of "password authentication failed" (PostgreSQL error class 28).
INVALID_PASSWORD = "28P01"  # noqa: S105 - an error code, not a password


def _is_invalid_password(exc: Exception) -> bool:
    details = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return details.get("C") == INVALID_PASSWORD


def database_url(settings: Settings, secrets_client: Any = None) -> URL:
    """Build the audit database URL from settings (and Secrets Manager when configured)."""
    if not settings.database_secret_arn:
        url = make_url(settings.database_url)
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+pg8000")
        return url

    return _secret_url(settings, SecretCredentials(settings.database_secret_arn, secrets_client))


def create_audit_engine(settings: Settings, secrets_client: Any = None) -> Engine:
    """Create the process-wide audit engine (pooled, reused by every request)."""
    credentials = None
    if settings.database_secret_arn:
        credentials = SecretCredentials(settings.database_secret_arn, secrets_client)
        url = _secret_url(settings, credentials)
    else:
        url = database_url(settings)
    # No pre-ping: AuditStore retries once on a connection the server had closed.
    # Autocommit, set once per connection: AuditStore opens a transaction only for
    # multi-row writes and always ends it, so a returned connection needs no reset.
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}
    connect_args: dict[str, Any] = {}

    if url.get_backend_name() == "postgresql":
        options.update(
            pool_size=settings.database_pool_size,
            max_overflow=settings.database_max_overflow,
            pool_timeout=settings.database_pool_timeout_seconds,
            pool_recycle=300,
        )
        connect_args["timeout"] = settings.database_connect_timeout_seconds
        if settings.database_ssl:
            connect_args["ssl_context"] = ssl.create_default_context()
    elif url.get_backend_name() == "sqlite":
        connect_args["check_same_thread"] = False
        connect_args["timeout"] = settings.database_connect_timeout_seconds

    engine = create_engine(url, connect_args=connect_args, **options)
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if credentials is not None:
        event.listen(engine, "do_connect", _rotation_aware_connect(credentials))
    logger.info("audit engine created for %s", url.render_as_string(hide_password=True))
    return engine


def _secret_url(settings: Settings, credentials: SecretCredentials) -> URL:
    if not settings.database_host:
        raise ConfigurationError(f"{Env.DATABASE_HOST} is required with {Env.DATABASE_SECRET_ARN}")
    secret = credentials.get()
    return URL.create(
        "postgresql+pg8000",
        username=secret["username"],
        password=secret["password"],
        host=settings.database_host,
        port=settings.database_port,
        database=settings.database_name,
    )


def _rotation_aware_connect(credentials: SecretCredentials) -> Any:
    def connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        secret = credentials.get()
        cparams.update(user=secret["username"], password=secret["password"])
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.DatabaseError as exc:
            if not _is_invalid_password(exc):
                raise
            logger.warning("database rejected the cached password; reading secret %s again",
                           credentials.secret_arn)
            secret = credentials.refresh()
            cparams.update(user=secret["username"], password=secret["password"])
            return dialect.connect(*cargs, **cparams)

    return connect


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
