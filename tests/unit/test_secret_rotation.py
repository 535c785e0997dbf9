"""A rotated database password is picked up after the first rejected login."""

from __future__ import annotations

from typing import Any

import pg8000.dbapi
import pytest

from fraudscore.database import SecretCredentials, _rotation_aware_connect


class FakeSecretsClient:
    def __init__(self, passwords: list[str]) -> None:
        self.passwords = passwords
        self.calls = 0

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        password = self.passwords[min(self.calls, len(self.passwords) - 1)]
        self.calls += 1
        return {"SecretString": f'{{"username": "app", "password": "{password}"}}'}


class FakeDialect:
    loaded_dbapi = pg8000.dbapi

    def __init__(self, accepted: str) -> None:
        self.accepted = accepted
        self.attempts: list[str] = []

    def connect(self, *args: Any, **params: Any) -> str:
        self.attempts.append(params["password"])
        if params["password"] != self.accepted:
            raise pg8000.dbapi.DatabaseError(
                {"S": "FATAL", "C": "28P01", "M": "password authentication failed"}
            )
        return "connection"


def test_rejected_password_rereads_secret() -> None:
    client = FakeSecretsClient(["old-password", "new-password"])
    credentials = SecretCredentials("arn:aws:secretsmanager:us-east-1:1:secret:db", client)
    dialect = FakeDialect(accepted="new-password")
    connect = _rotation_aware_connect(credentials)

    first = connect(dialect, None, (), {})
    second = connect(dialect, None, (), {})

    assert first == "connection"
    assert second == "connection"
    assert dialect.attempts == ["old-password", "new-password", "new-password"]
    assert client.calls == 2


def test_other_database_errors_are_raised() -> None:
    client = FakeSecretsClient(["pw"])
    credentials = SecretCredentials("arn:aws:secretsmanager:us-east-1:1:secret:db", client)

    class DownDialect(FakeDialect):
        def connect(self, *args: Any, **params: Any) -> str:
            raise pg8000.dbapi.DatabaseError(
                {"C": "57P03", "M": "the database system is starting up"}
            )

    with pytest.raises(pg8000.dbapi.DatabaseError):
        _rotation_aware_connect(credentials)(DownDialect("pw"), None, (), {})
    assert client.calls == 1
