"""Service settings, read once per process from environment variables.

Precedence is: an explicit argument to :meth:`Settings.from_env`, then the
environment variable, then the default. Every variable the service reads is
named in :class:`Env`, so the template, the docs and the code share one list.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from fraudscore.exceptions import ConfigurationError


class Env:
    """Names of the environment variables the service reads."""

    MODEL_URI = "MODEL_URI"
    BUNDLE_REFRESH_SECONDS = "BUNDLE_REFRESH_SECONDS"
    DATABASE_URL = "DATABASE_URL"
    DATABASE_SECRET_ARN = "DATABASE_SECRET_ARN"  # noqa: S105 - a variable name
    DATABASE_HOST = "DATABASE_HOST"
    DATABASE_PORT = "DATABASE_PORT"
    DATABASE_NAME = "DATABASE_NAME"
    DATABASE_SSL = "DATABASE_SSL"
    DATABASE_POOL_SIZE = "DATABASE_POOL_SIZE"
    DATABASE_MAX_OVERFLOW = "DATABASE_MAX_OVERFLOW"
    DATABASE_POOL_TIMEOUT_SECONDS = "DATABASE_POOL_TIMEOUT_SECONDS"
    DATABASE_CONNECT_TIMEOUT_SECONDS = "DATABASE_CONNECT_TIMEOUT_SECONDS"
    AUDIT_ENABLED = "AUDIT_ENABLED"
    AUDIT_SPOOL_PATH = "AUDIT_SPOOL_PATH"
    AUDIT_FALLBACK_QUEUE_URL = "AUDIT_FALLBACK_QUEUE_URL"
    STAGE2_MODE = "STAGE2_MODE"
    STAGE2_FUNCTION_NAME = "STAGE2_FUNCTION_NAME"
    STAGE2_ENDPOINT_URL = "STAGE2_ENDPOINT_URL"
    STAGE2_CONNECT_TIMEOUT_SECONDS = "STAGE2_CONNECT_TIMEOUT_SECONDS"
    STAGE2_READ_TIMEOUT_SECONDS = "STAGE2_READ_TIMEOUT_SECONDS"
    STAGE2_FAILURE_POLICY = "STAGE2_FAILURE_POLICY"
    STAGE2_BREAKER_THRESHOLD = "STAGE2_BREAKER_THRESHOLD"
    STAGE2_BREAKER_COOLDOWN_SECONDS = "STAGE2_BREAKER_COOLDOWN_SECONDS"
    MAX_BATCH_SIZE = "MAX_BATCH_SIZE"
    MAX_BODY_BYTES = "MAX_BODY_BYTES"
    API_BASE_PATH = "API_BASE_PATH"
    CORS_ALLOW_ORIGINS = "CORS_ALLOW_ORIGINS"
    # Set by Lambda, not by the template: on-demand, provisioned-concurrency or snap-start.
    AWS_LAMBDA_INITIALIZATION_TYPE = "AWS_LAMBDA_INITIALIZATION_TYPE"


class Stage2Mode(StrEnum):
    """Placement of stage 2: in the same process, or in its own Lambda function."""

    INPROCESS = "inprocess"
    LAMBDA = "lambda"


class Stage2FailurePolicy(StrEnum):
    """Response of stage 1 when stage 2 fails: its own decision, or manual review."""

    STAGE1 = "stage1"
    REVIEW = "review"


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed service configuration. Build it with :meth:`from_env`."""

    model_uri: str = "model/bundle"
    bundle_refresh_seconds: float = 0.0
    database_url: str = "sqlite:///audit.db"
    database_secret_arn: str | None = None
    database_host: str | None = None
    database_port: int = 5432
    database_name: str = "fraud"
    database_ssl: bool = False
    database_pool_size: int = 5
    database_max_overflow: int = 10
    database_pool_timeout_seconds: float = 5.0
    database_connect_timeout_seconds: float = 5.0
    audit_enabled: bool = True
    audit_spool_path: str = "audit-spool.jsonl"
    audit_fallback_queue_url: str | None = None
    stage2_mode: Stage2Mode = Stage2Mode.INPROCESS
    stage2_function_name: str | None = None
    stage2_endpoint_url: str | None = None
    stage2_connect_timeout_seconds: float = 1.0
    stage2_read_timeout_seconds: float = 2.0
    stage2_failure_policy: Stage2FailurePolicy = Stage2FailurePolicy.STAGE1
    stage2_breaker_threshold: int = 5
    stage2_breaker_cooldown_seconds: float = 30.0
    max_batch_size: int = 1000
    max_body_bytes: int = 1_048_576
    api_base_path: str = ""
    cors_allow_origins: tuple[str, ...] = field(default_factory=tuple)
    aws_lambda_initialization_type: str | None = None

    @property
    def on_demand_lambda_init(self) -> bool:
        """Whether this process is a Lambda container started for a waiting request.

        Such a container creates the stage-2 Lambda client on the first escalation. Under
        provisioned concurrency or SnapStart, init runs before any request waits, and
        outside Lambda (uvicorn) a server reports ready only after init, so there
        every client is created at init.
        """
        return self.aws_lambda_initialization_type == "on-demand"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) and overrides.

        Raises
        ------
        ConfigurationError
            If a variable is present but cannot be parsed, or the combination is
            invalid (for example ``STAGE2_MODE=lambda`` without a function name).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for item in fields(cls):
            name = item.name.upper()
            if item.name in overrides:
                value = overrides[item.name]
                # Strings are parsed as if they came from the environment ("lambda", "5").
                values[item.name] = _convert(item.name, name, value) \
                    if isinstance(value, str) else value
            elif name in env and env[name] != "":
                values[item.name] = _convert(item.name, name, env[name])
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check cross-field rules and numeric ranges."""
        if self.stage2_mode is Stage2Mode.LAMBDA and not self.stage2_function_name:
            raise ConfigurationError(
                f"{Env.STAGE2_FUNCTION_NAME} is required when {Env.STAGE2_MODE}=lambda"
            )
        if not 1 <= self.max_batch_size <= 10_000:
            raise ConfigurationError(
                f"{Env.MAX_BATCH_SIZE} must be between 1 and 10000, got {self.max_batch_size}"
            )
        if self.max_body_bytes <= 0:
            raise ConfigurationError(
                f"{Env.MAX_BODY_BYTES} must be positive, got {self.max_body_bytes}"
            )
        for name in ("stage2_connect_timeout_seconds", "stage2_read_timeout_seconds",
                     "database_pool_size", "database_pool_timeout_seconds",
                     "database_connect_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(
                    f"{name.upper()} must be positive, got {getattr(self, name)}"
                )
        if self.database_max_overflow < 0:
            raise ConfigurationError(
                f"{Env.DATABASE_MAX_OVERFLOW} must be 0 or more, got {self.database_max_overflow}"
            )
        if self.stage2_endpoint_url is not None:
            _check_endpoint_url(Env.STAGE2_ENDPOINT_URL, self.stage2_endpoint_url)


def _check_endpoint_url(name: str, url: str) -> None:
    """Reject a URL that botocore could not use as an endpoint."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"{name} is not a valid URL: {url!r} ({exc})") from exc
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigurationError(
            f"{name} must be an http:// or https:// URL with a host, got {url!r}"
        )
    if not (_HOST_NAME.fullmatch(parts.hostname) or _is_ip_address(parts.hostname)):
        raise ConfigurationError(f"{name} has an invalid host name: {url!r}")
    if port == 0:
        raise ConfigurationError(f"{name} has port 0, which no server listens on: {url!r}")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{name} must not have a query or a fragment: {url!r}")


_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _is_ip_address(host: str) -> bool:
    # Imported here because only an IPv6 host needs it, and settings load on every cold start.
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


_ENUMS: dict[str, type[StrEnum]] = {
    "stage2_mode": Stage2Mode,
    "stage2_failure_policy": Stage2FailurePolicy,
}
_INTS = {
    "database_port",
    "database_pool_size",
    "database_max_overflow",
    "stage2_breaker_threshold",
    "max_batch_size",
    "max_body_bytes",
}
_FLOATS = {
    "bundle_refresh_seconds",
    "database_pool_timeout_seconds",
    "database_connect_timeout_seconds",
    "stage2_connect_timeout_seconds",
    "stage2_read_timeout_seconds",
    "stage2_breaker_cooldown_seconds",
}
_BOOLS = {"database_ssl", "audit_enabled"}


def _convert(attribute: str, name: str, raw: str) -> Any:
    try:
        if attribute in _ENUMS:
            return _ENUMS[attribute](raw.strip().lower())
        if attribute in _INTS:
            return int(raw)
        if attribute in _FLOATS:
            return float(raw)
        if attribute in _BOOLS:
            return _parse_bool(name, raw)
        if attribute == "cors_allow_origins":
            return tuple(origin.strip() for origin in raw.split(",") if origin.strip())
    except ValueError as exc:
        raise ConfigurationError(f"{name} is invalid: {raw!r} ({exc})") from exc
    return raw
