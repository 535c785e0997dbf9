"""Nothing the whole test run logged contains the database password."""

from __future__ import annotations

import os

import pytest

from tests.conftest import CAPTURED_OUTPUT, DATABASE_PASSWORD, TEST_DATABASE_ENV


@pytest.mark.runs_last
def test_password_absent_from_captured_logs() -> None:
    text = "\n".join(CAPTURED_OUTPUT)

    assert len(text) > 10_000, "too little output was captured for the check to mean anything"
    assert "audit database configured: " in text
    if os.environ.get(TEST_DATABASE_ENV):
        # The PostgreSQL tests ran, so the password was in use and masked in the log.
        assert "audit database configured: postgresql://postgres:***@" in text
    assert DATABASE_PASSWORD not in text


@pytest.mark.runs_last
def test_check_detects_a_leak(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from tests.conftest import _CaptureAll

    handler = _CaptureAll()
    logger = logging.getLogger("leak-check")
    logger.addHandler(handler)
    before = len(CAPTURED_OUTPUT)
    logger.warning("connecting with %s", "pw-example")
    logger.removeHandler(handler)

    assert any("pw-example" in line for line in CAPTURED_OUTPUT[before:])
    del CAPTURED_OUTPUT[before:]
