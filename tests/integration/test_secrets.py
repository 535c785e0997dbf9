"""Audit database credentials from Secrets Manager (moto) and a real local PostgreSQL."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sqlalchemy.engine import make_url

from fraudscore.database import open_audit_database
from fraudscore.exceptions import ConfigurationError, DatabaseError
from fraudscore.runtime import Runtime
from fraudscore.settings import Settings
from tests.ports import free_port

REGION = "us-east-1"
# Characters that must be escaped in a URL, so a hand-built URL string would break.
PASSWORD = "s3cr3t-p@ss:w/rd%?#&=+ value"


@pytest.fixture
def secrets(aws_credentials: None) -> Iterator[Any]:
    """A Secrets Manager client on moto's in-process backend."""
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


class CountingSecretsClient:
    """Secrets Manager client wrapper that counts ``get_secret_value`` calls."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.reads = 0

    def get_secret_value(self, **kwargs: Any) -> Any:
        self.reads += 1
        return self._client.get_secret_value(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _create_secret(client: Any, value: str, name: str = "fraud/audit-database") -> str:
    return str(client.create_secret(Name=name, SecretString=value)["ARN"])


def _credentials(username: str = "fraud_app", password: str = PASSWORD) -> str:
    return json.dumps({"username": username, "password": password, "engine": "postgres"})


def _settings(secret_arn: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_secret_arn": secret_arn,
        "database_host": "127.0.0.1",
        "database_name": "test",
        "database_port": 5432,
        **overrides,
    }
    return Settings(**values)


def _postgres_settings(postgres_url: str, secret_arn: str, **overrides: Any) -> Settings:
    url = make_url(postgres_url)
    return _settings(secret_arn, database_host=url.host or "127.0.0.1",
                     database_port=url.port or 5432, database_name=url.database or "postgres",
                     **overrides)


def _capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture this package's DEBUG records and everything else from INFO.

    botocore itself logs whole response bodies, secret values included, at DEBUG, so its
    DEBUG records are outside what this package can keep clean.
    """
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="fraudscore")


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def test_database_address_from_secret(secrets: Any) -> None:
    arn = _create_secret(secrets, _credentials())

    database = open_audit_database(_settings(arn), secrets)

    assert database.dialect == "postgresql"
    assert database.address.user == "fraud_app"
    assert database.address.password is None  # kept by the credentials, not the address
    assert database.address.host == "127.0.0.1"
    assert database.address.port == 5432
    assert database.address.database == "test"


def test_url_text_hides_password(secrets: Any, caplog: pytest.LogCaptureFixture) -> None:
    _capture_logs(caplog)
    arn = _create_secret(secrets, _credentials())
    settings = _settings(arn)

    database = open_audit_database(settings, secrets)

    assert PASSWORD not in str(database)
    assert PASSWORD not in repr(database)
    assert PASSWORD not in database.address.render()
    assert "fraud_app@127.0.0.1" in database.address.render()
    assert PASSWORD not in repr(settings)
    assert arn in caplog.text
    assert PASSWORD not in caplog.text


def test_secret_without_host_rejected(secrets: Any) -> None:
    arn = _create_secret(secrets, _credentials())

    with pytest.raises(ConfigurationError, match="DATABASE_HOST is required"):
        open_audit_database(_settings(arn, database_host=None), secrets)


@pytest.mark.parametrize(
    "value",
    [
        f"username=fraud_app password={PASSWORD}",
        json.dumps({"username": "fraud_app"}),
        json.dumps({"user": "fraud_app", "password": PASSWORD}),
        json.dumps(["fraud_app", PASSWORD]),
        json.dumps(PASSWORD),
        json.dumps({"username": "fraud_app", "password": 31415926535}),
        '{"username": "fraud_app", "password": "' + PASSWORD + '"',
    ],
    ids=["not-json", "no-password", "no-username", "list", "string", "number", "truncated"],
)
def test_malformed_secret_rejected(secrets: Any, caplog: pytest.LogCaptureFixture,
                                   value: str) -> None:
    _capture_logs(caplog)
    arn = _create_secret(secrets, value)

    with pytest.raises(ConfigurationError) as raised:
        open_audit_database(_settings(arn), secrets)

    assert arn in str(raised.value)
    assert "'username' and 'password'" in str(raised.value)
    assert PASSWORD not in _exception_text(raised.value)
    assert "31415926535" not in _exception_text(raised.value)
    assert PASSWORD not in caplog.text


def test_missing_secret_rejected(secrets: Any) -> None:
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:fraud/absent-AbCdEf"

    with pytest.raises(ConfigurationError) as raised:
        open_audit_database(_settings(arn), secrets)

    assert arn in str(raised.value)
    assert "ResourceNotFoundException" in str(raised.value)


def test_runtime_keeps_secret_error(secrets: Any, bundle_dir: Path) -> None:
    arn = _create_secret(secrets, json.dumps({"password": PASSWORD}))
    settings = _settings(arn, model_uri=str(bundle_dir))

    runtime = Runtime.start(settings, secrets_client=secrets)

    assert runtime.service is None
    assert runtime.load_error is not None
    assert arn in runtime.load_error
    assert PASSWORD not in runtime.load_error


def test_connection_error_hides_password(secrets: Any,
                                         caplog: pytest.LogCaptureFixture) -> None:
    _capture_logs(caplog)
    arn = _create_secret(secrets, _credentials())
    settings = _settings(arn, database_port=free_port(), database_connect_timeout_seconds=2.0)

    database = open_audit_database(settings, secrets)
    with pytest.raises(DatabaseError) as raised, database.connection():
        pass
    database.close()

    assert raised.value.connection_lost
    assert PASSWORD not in _exception_text(raised.value)
    assert PASSWORD not in str(database)
    assert PASSWORD not in repr(database)
    assert "audit database configured: postgresql://fraud_app@127.0.0.1" in caplog.text
    assert PASSWORD not in caplog.text


@pytest.mark.postgres
def test_database_from_secret_queries_postgres(secrets: Any, postgres_url: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    _capture_logs(caplog)
    # The local server trusts its "postgres" user, so any password is accepted.
    username = make_url(postgres_url).username or "postgres"
    arn = _create_secret(secrets, _credentials(username=username))

    database = open_audit_database(_postgres_settings(postgres_url, arn), secrets)
    try:
        with database.connection() as (connection, _reused):
            selected = connection.query("SELECT 1")[0][0]
            user = connection.query("SELECT current_user")[0][0]
    finally:
        database.close()

    assert selected == 1
    assert user == username
    assert PASSWORD not in str(database)
    assert PASSWORD not in repr(database)
    assert PASSWORD not in caplog.text


@pytest.mark.postgres
def test_secret_read_once_per_runtime(secrets: Any, postgres_url: str,
                                      bundle_dir: Path) -> None:
    username = make_url(postgres_url).username or "postgres"
    arn = _create_secret(secrets, _credentials(username=username))
    counting = CountingSecretsClient(secrets)
    settings = _postgres_settings(postgres_url, arn, model_uri=str(bundle_dir))

    runtime = Runtime.start(settings, secrets_client=counting)
    assert runtime.load_error is None
    assert runtime.audit is not None
    database = runtime.audit.database
    results = []
    try:
        for _ in range(3):
            with database.connection() as (connection, reused):
                results.append(connection.query("SELECT 1")[0][0])
            assert not reused
            # A closed pool keeps no connection, so each use logs in again.
            database.close()
    finally:
        database.close()

    assert results == [1, 1, 1]
    assert counting.reads == 1
