"""Audit database URLs and the TLS choice passed to pg8000."""

from __future__ import annotations

import ssl
from typing import Any

import pg8000.native
import pytest

from fraudscore.database import DatabaseAddress, open_database_url, parse_database_url
from fraudscore.exceptions import ConfigurationError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:pw@db.internal:6543/fraud",
         DatabaseAddress("postgresql", "fraud", host="db.internal", port=6543, user="app",
                         password="pw")),
        ("postgresql+pg8000://postgres@127.0.0.1/test",
         DatabaseAddress("postgresql", "test", host="127.0.0.1", user="postgres")),
        ("postgres://u%40x:p%3Aw%2F@h/d%20b",
         DatabaseAddress("postgresql", "d b", host="h", user="u@x", password="p:w/")),
        ("sqlite:///audit.db", DatabaseAddress("sqlite", "audit.db")),
        ("sqlite:////var/data/audit.db", DatabaseAddress("sqlite", "/var/data/audit.db")),
    ],
)
def test_url_parsed(url: str, expected: DatabaseAddress) -> None:
    address = parse_database_url(url)

    assert address == expected
    assert address.password == expected.password


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/db", "must start with postgresql:// or sqlite:///"),
        ("audit.db", "must start with postgresql:// or sqlite:///"),
        ("postgresql://u@h/db?sslmode=require", "must not have query parameters"),
        ("postgresql://u@h/", "must name a host and a database"),
        ("postgresql:///db", "must name a host and a database"),
        ("postgresql://u@h:99999/db", "invalid port"),
        ("sqlite://", "must name a file"),
        ("sqlite:///:memory:", "must name a file"),
    ],
)
def test_invalid_url_rejected(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_database_url(url)


@pytest.mark.parametrize("use_tls", [False, True])
def test_tls_setting_passed_to_driver(monkeypatch: pytest.MonkeyPatch, use_tls: bool) -> None:
    seen: dict[str, Any] = {}

    def connect(user: str, **params: Any) -> Any:
        seen.update(params)
        raw = type("Raw", (), {"close": lambda self: None})()
        raw.parameter_statuses = {"standard_conforming_strings": "on"}
        return raw

    monkeypatch.setattr(pg8000.native, "Connection", connect)
    database = open_database_url("postgresql://app@db.internal/fraud", database_ssl=use_tls)

    with database.connection():
        pass

    if use_tls:
        assert isinstance(seen["ssl_context"], ssl.SSLContext)
        assert seen["ssl_context"].verify_mode == ssl.CERT_REQUIRED
        assert seen["ssl_context"].check_hostname
    else:
        # False: plain text. None would make pg8000 try TLS without verifying the server.
        assert seen["ssl_context"] is False
