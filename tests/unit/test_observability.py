"""The shared Powertools logger: message decoding and JSON lines of the module loggers."""

from __future__ import annotations

import io
import json
import logging

import pytest

from fraudscore.observability import (
    decode_json_message,
    log_modules_as_json,
    logger,
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("decision", "decision"),
        ("123", "123"),
        ("", ""),
        ('{"rows": 2}', {"rows": 2}),
        ("[1, 2]", [1, 2]),
    ],
)
def test_message_decoding(message: str, expected: object) -> None:
    assert decode_json_message(message) == expected


def test_decision_line_is_one_json_object(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler):
            monkeypatch.setattr(handler, "stream", stream)

    logger.info("decision", extra={"decision_id": "d-1", "is_fraud": False})

    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["message"] == "decision"
    assert line["decision_id"] == "d-1"
    assert line["is_fraud"] is False
    assert line["level"] == "INFO"


def test_module_lines_become_json(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    stream = io.StringIO()
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler):
            monkeypatch.setattr(handler, "stream", stream)

    log_modules_as_json()
    logging.getLogger("fraudscore.audit_fallback").warning("spooled %d record(s)", 3)

    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["message"] == "spooled 3 record(s)"
    assert line["level"] == "WARNING"
    assert line["name"] == "fraudscore.audit_fallback"
    assert line["service"] == logger.service
    # Not propagated: Lambda's root handler would print the line a second time as text.
    assert "spooled 3 record(s)" not in caplog.text


def test_module_debug_lines_follow_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler):
            monkeypatch.setattr(handler, "stream", stream)
    level = logger.log_level

    log_modules_as_json()
    logging.getLogger("fraudscore.audit").debug("hidden at INFO")
    logger.setLevel("DEBUG")
    try:
        log_modules_as_json()
        logging.getLogger("fraudscore.audit").debug("shown at DEBUG")
    finally:
        logger.setLevel(level)

    assert level == logging.INFO
    assert "hidden at INFO" not in stream.getvalue()
    assert "shown at DEBUG" in stream.getvalue()
