"""Database credentials from the Secrets Manager secret that RDS manages and rotates."""

from __future__ import annotations

import json
import logging
from typing import Any

from fraudscore.aws_clients import create_client
from fraudscore.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

# SQLSTATE of "password authentication failed" (PostgreSQL error class 28).
INVALID_PASSWORD = "28P01"  # noqa: S105 - an error code, not a password


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
        client = create_client("secretsmanager")
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
        """Return the cached secret, reading it on first use."""
        if self._secret is None:
            self._secret = read_database_secret(self.secret_arn, self.client)
            logger.info("read database credentials from secret %s", self.secret_arn)
        return self._secret

    def refresh(self) -> dict[str, Any]:
        """Read the secret again (after RDS rotated the password) and return it."""
        self._secret = None
        return self.get()

    def __repr__(self) -> str:
        return f"SecretCredentials({self.secret_arn!r})"
