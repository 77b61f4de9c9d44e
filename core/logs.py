"""Logging for every orderbus process: plain text or one JSON object per line, secrets redacted.

JSON lines carry the record's structured fields as keys: whatever was passed with `extra=`, and
the `name=%s` pairs of the message template itself (`"connect client_id=%s role=%s rid=%s"` gives
`client_id`, `role` and `restaurant`), so the broker's connection events are machine-readable
without changing how they are written.

No token, password or key is ever logged; `RedactSecrets` is the last line of defence. It
replaces, in the message, the structured fields and any traceback: anything shaped like a JWT
(three base64url segments), the value after `password=`/`token=`/`secret=`/`key=`, and the exact
secrets registered with `add_secret` (the signing key).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

REDACTED = "[redacted]"
_JWT = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # a JSON header: any JWT
    r"|[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}"  # three long base64url segments
)
_ASSIGNED = re.compile(
    r"(?i)\b((?:password|passwd|secret|token|access_token|jwt_key|api_key|authorization)[\"']?\s*[:=]\s*"
    r"(?:bearer\s+)?[\"']?)([^\s\"'\\,;}]+)"
)
_SECRETS: set[str] = set()
_PLACEHOLDER = re.compile(r"%(?:%|(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[sdrifgeExXoca])")
_RENAMED = {"rid": "restaurant", "from": "remote"}
# LogRecord's own attributes: everything else on a record came from `extra=`
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "redacted", "fields"}


def add_secret(value: str | bytes | None) -> None:
    """Redact this exact string wherever it would be logged (the signing key, for one)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value and len(value) >= 8:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _JWT.sub(REDACTED, text)
    return _ASSIGNED.sub(lambda match: match.group(1) + REDACTED, text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"))
    return value


def template_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `name=%s` pairs of a %-style message template, with their arguments."""
    if not isinstance(record.msg, str) or not isinstance(record.args, tuple) or not record.args:
        return {}
    placeholders = [p for p in _PLACEHOLDER.finditer(record.msg) if p.group() != "%%"]
    if len(placeholders) != len(record.args):
        return {}
    fields: dict[str, Any] = {}
    for index, placeholder in enumerate(placeholders):
        named = re.search(r"(\w+)=$", record.msg[: placeholder.start()])
        if named is not None:
            fields[_RENAMED.get(named.group(1), named.group(1))] = record.args[index]
    return fields


def _event(record: logging.LogRecord) -> str | None:
    """`"connect refused client_id=%r reason=%s"` → `connect_refused`."""
    if not isinstance(record.msg, str):
        return None
    head = record.msg.split("=", 1)[0].rsplit(" ", 1)[0] if "=" in record.msg else ""
    words = re.findall(r"[a-z_]+", head.lower())
    return "_".join(words) or None


class RedactSecrets(logging.Filter):
    """Put on every handler: rewrites the record so that no formatter can emit a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what we can, without its arguments
            message = str(record.msg)
        fields = template_fields(record)
        if fields and getattr(record, "event", None) is None:
            record.event = _event(record)
        clean = redact(message)
        redacted = clean != message
        record.msg, record.args = clean, None
        record.fields = cleaned_fields = {key: _clean(value) for key, value in fields.items()}
        redacted = redacted or cleaned_fields != fields
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str | bytes):
                cleaned = _clean(value)
                redacted = redacted or cleaned != value
                setattr(record, key, cleaned)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record.redacted = redacted
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, event, structured fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", None) or template_fields(record))
        for key, value in record.__dict__.items():
            if key not in _STANDARD and value is not None:
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return redact(json.dumps(out, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


NOISY = ("amqtt", "transitions", "websockets", "uvicorn.error", "httpx")  # httpx: a line per request (agents)


def handler(json_lines: bool, stream: Any = None) -> logging.Handler:
    out = logging.StreamHandler(stream or sys.stderr)
    out.addFilter(RedactSecrets())
    out.setFormatter(
        JsonFormatter() if json_lines else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    return out


def configure(json_lines: bool = False, level: int = logging.INFO) -> None:
    """The process's logging: one handler on the root logger, replacing any before it."""
    root = logging.getLogger()
    for previous in list(root.handlers):
        root.removeHandler(previous)
    root.addHandler(handler(json_lines))
    root.setLevel(level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
