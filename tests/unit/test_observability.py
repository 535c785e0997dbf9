"""Log message decoding of the shared Powertools logger."""

from __future__ import annotations

import io
import json
import logging

import pytest

from fraudscore.observability import decode_json_message, logger


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
