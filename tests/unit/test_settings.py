"""Settings from the environment: parsing, and rejected values with the variable named."""

from __future__ import annotations

import pytest

from fraudscore.exceptions import ConfigurationError
from fraudscore.settings import Settings, Stage2Mode


def test_values_parsed_from_environment() -> None:
    settings = Settings.from_env({
        "DATABASE_POOL_SIZE": "3",
        "DATABASE_MAX_OVERFLOW": "0",
        "DATABASE_SSL": "true",
        "STAGE2_MODE": "LAMBDA",
        "STAGE2_FUNCTION_NAME": "fraud-stage2",
        "CORS_ALLOW_ORIGINS": "https://a.example, https://b.example",
    })

    assert settings.database_pool_size == 3
    assert settings.database_max_overflow == 0
    assert settings.database_ssl is True
    assert settings.stage2_mode is Stage2Mode.LAMBDA
    assert settings.cors_allow_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_POOL_SIZE", "0"),
        ("DATABASE_MAX_OVERFLOW", "-1"),
        ("DATABASE_POOL_TIMEOUT_SECONDS", "0"),
        ("DATABASE_CONNECT_TIMEOUT_SECONDS", "-5"),
        ("DATABASE_POOL_SIZE", "two"),
        ("DATABASE_SSL", "maybe"),
        ("MAX_BATCH_SIZE", "10001"),
        ("STAGE2_MODE", "remote"),
    ],
)
def test_invalid_value_names_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_env({variable: value})


def test_lambda_mode_needs_function_name() -> None:
    with pytest.raises(ConfigurationError, match="STAGE2_FUNCTION_NAME is required"):
        Settings.from_env({"STAGE2_MODE": "lambda"})


@pytest.mark.parametrize(
    "url", ["127.0.0.1:3001", "http://127.0.0.1:abc", "http://[::1", "ftp://127.0.0.1:3001",
            "http://", "http://exa mple:80", "http://exa%20mple:80", "http://127.0.0.1:0",
            "http://127.0.0.1:3001/lambda?x=1", "http://[zz]:80"],
)
def test_unusable_stage2_endpoint_url_is_rejected(url: str) -> None:
    with pytest.raises(ConfigurationError, match="STAGE2_ENDPOINT_URL"):
        Settings.from_env({"STAGE2_ENDPOINT_URL": url})


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:3001", "https://lambda.us-east-1.amazonaws.com",
            "http://[::1]:3001", "http://localhost:3001/proxy"],
)
def test_stage2_endpoint_url_accepted(url: str) -> None:
    settings = Settings.from_env({"STAGE2_ENDPOINT_URL": url})

    assert settings.stage2_endpoint_url == url
