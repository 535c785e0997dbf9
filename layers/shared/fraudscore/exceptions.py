"""Exceptions raised by the fraudscore package."""

from __future__ import annotations


class FraudScoreError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(FraudScoreError):
    """An environment variable or setting is missing or invalid."""


class FeatureValidationError(FraudScoreError, ValueError):
    """A transaction's features do not match the bundle's feature schema."""

    def __init__(self, field: str, message: str, row: int | None = None) -> None:
        where = field if row is None else f"transactions[{row}].{field}"
        super().__init__(f"{where}: {message}")
        self.field = field
        self.message = message
        self.row = row


class BundleError(FraudScoreError):
    """A model bundle cannot be read or does not have the expected layout."""


class BundleIntegrityError(BundleError):
    """A bundle file's SHA-256 does not match the manifest."""


class BundleVersionError(BundleError):
    """A bundle's format version or schema is not supported by this code."""


class Stage2Error(FraudScoreError):
    """Stage 2 could not score a transaction; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class AuditError(FraudScoreError):
    """An audit record could not be written to the audit store."""


class IdempotencyConflictError(FraudScoreError):
    """A transaction id was reused with different features.

    ``decision_id`` names the rejected record; ``row`` is its position in the request,
    when the caller knows it.
    """

    def __init__(
        self, transaction_id: str, message: str, *, decision_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.transaction_id = transaction_id
        self.decision_id = decision_id
        self.row: int | None = None


class DatabaseError(FraudScoreError):
    """Failure of a database statement or connection.

    ``sqlstate`` is PostgreSQL's five-character error code when the server responded,
    else None. ``connection_lost`` is True when the connection can no longer be used
    (network error, server restart), so a retry on a new connection may succeed.
    """

    def __init__(
        self, message: str, *, sqlstate: str | None = None, connection_lost: bool = False
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.connection_lost = connection_lost
