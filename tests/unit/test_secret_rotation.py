"""A rotated database password is picked up after the first rejected login."""

from __future__ import annotations

from typing import Any

import pg8000.exceptions
import pg8000.native
import pytest

from fraudscore.database import DatabaseAddress, _connect_postgres
from fraudscore.database_secret import SecretCredentials
from fraudscore.exceptions import DatabaseError

ADDRESS = DatabaseAddress("postgresql", "fraud", host="proxy.example.internal")
SECRET_ARN = "arn:aws:secretsmanager:us-east-1:1:secret:db"


class FakeSecretsClient:
    def __init__(self, passwords: list[str]) -> None:
        self.passwords = passwords
        self.calls = 0

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        password = self.passwords[min(self.calls, len(self.passwords) - 1)]
        self.calls += 1
        return {"SecretString": f'{{"username": "app", "password": "{password}"}}'}


class FakeServer:
    """Stands in for pg8000.native.Connection: accepts one password, or is starting up."""

    def __init__(self, accepted: str | None) -> None:
        self.accepted = accepted
        self.attempts: list[str] = []

    def connect(self, user: str, **params: Any) -> Any:
        self.attempts.append(params["password"])
        if self.accepted is None:
            raise pg8000.exceptions.DatabaseError(
                {"C": "57P03", "M": "the database system is starting up"}
            )
        if params["password"] != self.accepted:
            raise pg8000.exceptions.DatabaseError(
                {"S": "FATAL", "C": "28P01", "M": "password authentication failed"}
            )
        connection = type("Raw", (), {})()
        connection.parameter_statuses = {"standard_conforming_strings": "on"}
        return connection


def test_rejected_password_rereads_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeSecretsClient(["old-password", "new-password"])
    credentials = SecretCredentials(SECRET_ARN, client)
    server = FakeServer(accepted="new-password")
    monkeypatch.setattr(pg8000.native, "Connection", server.connect)

    first = _connect_postgres(ADDRESS, credentials, False, 5.0)
    second = _connect_postgres(ADDRESS, credentials, False, 5.0)

    assert first.raw is not None
    assert second.raw is not None
    assert server.attempts == ["old-password", "new-password", "new-password"]
    assert client.calls == 2


def test_other_database_errors_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeSecretsClient(["pw"])
    credentials = SecretCredentials(SECRET_ARN, client)
    monkeypatch.setattr(pg8000.native, "Connection", FakeServer(accepted=None).connect)

    with pytest.raises(DatabaseError) as raised:
        _connect_postgres(ADDRESS, credentials, False, 5.0)

    assert raised.value.sqlstate == "57P03"
    assert client.calls == 1


def test_password_not_in_repr() -> None:
    address = DatabaseAddress("postgresql", "fraud", host="h", user="app", password="s3cret")

    assert "s3cret" not in repr(address)
    assert "s3cret" not in address.render()
    assert address.render() == "postgresql://app:***@h:5432/fraud"
