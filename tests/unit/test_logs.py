"""Structured logs: JSON lines with the template's fields as keys; secrets redacted whatever logs them."""

from __future__ import annotations

import io
import json
import logging

import pytest

from core import logs
from core.tokens import TokenService

TOKEN = TokenService(b"unit-test-key-0123456789abcdef-0123456789").issue(
    sub="printer-1", role="printer", rid=7, audience="mqtt", ttl_seconds=60
)


@pytest.fixture
def emit():
    stream = io.StringIO()
    logger = logging.getLogger("orderbus.test-logs")
    handler = logs.handler(json_lines=True, stream=stream)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    yield logger, lines
    logger.removeHandler(handler)


def test_template_fields_become_keys(emit):
    logger, lines = emit
    logger.info("connect client_id=%s role=%s rid=%s from=%s", "printer-1", "printer", 7, "10.0.0.5")
    logger.warning("connect refused client_id=%r reason=%s", "ghost", "bad_signature")
    first, second = lines()
    assert first["event"] == "connect"
    assert (first["client_id"], first["role"], first["restaurant"], first["remote"]) == (
        "printer-1",
        "printer",
        7,
        "10.0.0.5",
    )
    assert first["message"] == "connect client_id=printer-1 role=printer rid=7 from=10.0.0.5"
    assert (second["event"], second["client_id"], second["reason"], second["level"]) == (
        "connect_refused",
        "ghost",
        "bad_signature",
        "WARNING",
    )


def test_extra_fields_become_keys(emit):
    logger, lines = emit
    logger.info("device gone", extra={"event": "disconnect", "client_id": "t-1", "role": "tablet", "reason": "lost"})
    (line,) = lines()
    assert (line["event"], line["client_id"], line["role"], line["reason"]) == ("disconnect", "t-1", "tablet", "lost")


@pytest.mark.parametrize(
    "message",
    [
        f"token {TOKEN}",
        f"Bearer {TOKEN}",
        f"password={TOKEN}",
        f'{{"password": "{TOKEN}"}}',
    ],
)
def test_a_jwt_is_redacted_wherever_it_is(emit, message):
    logger, lines = emit
    logger.info(message)
    logger.info("got %s", message)
    logger.info("fields", extra={"detail": message})
    try:
        raise ValueError(message)
    except ValueError:
        logger.exception("failed")
    text = json.dumps(lines())
    assert TOKEN not in text
    assert TOKEN.split(".")[2] not in text
    assert "[redacted]" in text


def test_passwords_and_registered_secrets_are_redacted(emit):
    logger, lines = emit
    logs.add_secret("s3cr3t-signing-key-value")
    logger.info("login password=hunter2 for %s", "a@example.com")
    logger.info("key is %s", "s3cr3t-signing-key-value")
    logger.info("config jwt_key: 'abcd' token=xyz, api_key=1234")
    text = json.dumps(lines())
    for secret in ("hunter2", "s3cr3t-signing-key-value", "'abcd'", "xyz", "1234"):
        assert secret not in text, secret
    assert "a@example.com" in text  # only secrets go


def test_ordinary_dotted_text_is_left_alone(emit):
    logger, lines = emit
    logger.info("loaded broker.metrics_plugin.MetricsPlugin from api.routers.ops at 127.0.0.1:8000 v0.1.0")
    (line,) = lines()
    assert "[redacted]" not in line["message"]


def test_a_bad_format_string_still_logs(emit):
    logger, lines = emit
    logger.info("two %s %s", "args-only-one")
    (line,) = lines()
    assert "two" in line["message"]


def test_text_lines_are_redacted_too():
    stream = io.StringIO()
    logger = logging.getLogger("orderbus.test-logs-text")
    logger.addHandler(logs.handler(json_lines=False, stream=stream))
    logger.propagate = False
    logger.warning("connect refused password=%s", TOKEN)
    assert TOKEN not in stream.getvalue() and "connect refused password=[redacted]" in stream.getvalue()
