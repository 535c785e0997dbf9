"""Client-side SQL literals: exact rendering, rejected values, and a real server's reading."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from fraudscore.database import Database, open_database_url
from fraudscore.exceptions import DatabaseError
from fraudscore.sql_literals import check_server_quoting, render_literal, render_statement

HOSTILE_STRINGS = [
    "'; DROP TABLE audit_decisions; --",
    "O'Brien",
    "''",
    "back\\slash\\'",
    "$$dollar$$ quoted $tag$",
    ":name placeholder",
    "line\nbreak\ttab\r",
    "unicode Ωμέγα 🚀",
    "E'\\x41'",
    "",
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "NULL"),
        (True, "TRUE"),
        (False, "FALSE"),
        (0, "0"),
        (-12, "-12"),
        (0.1, "0.1"),
        (1e-300, "1e-300"),
        ("it's", "'it''s'"),
        (datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
         "CAST('2026-01-02T03:04:05.000006+00:00' AS timestamptz)"),
        ({"b": 1.5, "a": "x'y"}, "CAST('{\"a\": \"x''y\", \"b\": 1.5}' AS jsonb)"),
    ],
)
def test_literal_text(value: Any, expected: str) -> None:
    assert render_literal(value) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (math.nan, ValueError),
        (math.inf, ValueError),
        ({"x": math.nan}, ValueError),
        ("nul\x00byte", ValueError),
        (datetime(2026, 1, 1), ValueError),
        (b"bytes", TypeError),
        ([1, 2], TypeError),
        (object(), TypeError),
    ],
    ids=["nan", "inf", "nan-in-json", "nul", "naive-datetime", "bytes", "list", "object"],
)
def test_literal_rejects(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        render_literal(value)


def test_statement_substitutes_each_placeholder_once() -> None:
    sql = render_statement("SELECT :a, :b, :a", {"a": ":b", "b": 2})

    assert sql == "SELECT ':b', 2, ':b'"


def test_statement_missing_parameter() -> None:
    with pytest.raises(KeyError, match="absent"):
        render_statement("SELECT :absent", {})


@pytest.mark.parametrize("setting", ["off", None])
def test_server_quoting_required(setting: str | None) -> None:
    statuses = {} if setting is None else {"standard_conforming_strings": setting}

    with pytest.raises(DatabaseError, match="standard_conforming_strings"):
        check_server_quoting(statuses)


@pytest.fixture
def postgres(postgres_database_url: str) -> Iterator[Database]:
    database = open_database_url(postgres_database_url)
    yield database
    database.close()


@pytest.mark.postgres
@pytest.mark.parametrize("text", HOSTILE_STRINGS)
def test_server_reads_strings_back(postgres: Database, text: str) -> None:
    with postgres.connection() as (connection, _reused):
        rows = connection.query("SELECT :value, length(:value)", {"value": text})

    assert rows == [(text, len(text))]


@pytest.mark.postgres
def test_server_reads_other_types_back(postgres: Database) -> None:
    moment = datetime(2026, 12, 4, 23, 59, 59, 123456, tzinfo=timezone(timedelta(hours=-5)))
    features = {"TX_AMOUNT": 12.5, "quote'key": -0.0, "small": 1e-12}
    params = {"flag": True, "count": 2**40, "ratio": 0.1 + 0.2, "when": moment,
              "features": features, "missing": None}

    with postgres.connection() as (connection, _reused):
        rows = connection.query(
            "SELECT :flag, :count, CAST(:ratio AS double precision), :when, :features, :missing",
            params,
        )

    flag, count, ratio, when, stored, missing = rows[0]
    assert flag is True
    assert count == 2**40
    assert ratio == 0.1 + 0.2  # repr() keeps every bit of a float
    assert when == moment
    assert stored == features
    assert missing is None
