"""The whole-run log scan (tests/conftest.py) really notices a token in a log record."""

import logging

from core.tokens import TokenService
from tests.support import TokenScan


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)


def test_a_token_in_a_message_or_its_arguments_is_a_leak():
    token = TokenService(b"k" * 32).issue(sub="a", role="admin", rid=1, audience="mqtt", ttl_seconds=60)
    scan = TokenScan()
    scan.emit(record("orderbus.broker", "connect refused client_id=%r", token))
    scan.emit(record("amqtt.broker", f"password {token}"))
    scan.emit(record("orderbus.broker", "connect client_id=%s role=%s", "dash", "admin"))
    scan.emit(record("orderbus.test-logs", f"deliberate {token}"))
    scan.emit(record("orderbus.broker", "bad args %s %s", "only one"))
    assert len(scan.leaks) == 2
