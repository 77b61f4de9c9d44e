"""Idempotency keys: a write retried with the same key is done once, and the retry gets the first answer.

The rule follows Stripe's `Idempotency-Key`. A key is scoped to who sends it, for which restaurant,
on which route; the first request with a key claims it by inserting its record in the caller's
unit of work, does its change, and stores its answer in that record; the unit of work commits
the change and the record together. So a crash after the commit leaves the record (the retry gets
the stored answer) and a crash before it leaves neither (the retry does the work, once).

A second request with the key while the first is in flight waits on the record's unique constraint
(on SQLite, on the writer lock the first one holds) and then gets the stored answer. The same key
with another request is refused (`KeyReused`). A request that fails stores nothing: its unit of
work rolls back, the claim with it, and a retry runs again. Records older than `TTL` no longer
count and are pruned in small batches.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from core.models import IdempotencyRecord, utcnow
from core.unit_of_work import UnitOfWork

TTL = timedelta(hours=24)
MAX_KEY = 255
PRUNE_BATCH = 500
_KEY = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY}}}")


class InvalidKey(ValueError):
    """A key that is empty, too long, or not printable ASCII."""


class KeyReused(ValueError):
    """The key was first used with another request: answering the stored response would be wrong."""


@dataclass(frozen=True)
class Stored:
    """The first request's answer, to send again."""

    status_code: int
    body: Any


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise InvalidKey(f"an idempotency key must be 1 to {MAX_KEY} printable ASCII characters")
    return key


def request_hash(method: str, path: str, body: bytes | Any) -> str:
    """The request's fingerprint: a JSON body in canonical form (key order and spacing do not count)."""
    content = body
    if isinstance(body, bytes | bytearray):
        try:
            content = json.loads(body) if body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            content = body.hex()
    canonical = json.dumps([method.upper(), path, content], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(
    uow: UnitOfWork, scope: str, key: str, fingerprint: str, now: datetime | None = None
) -> IdempotencyRecord | Stored:
    """Claim `key` in this unit of work (a new record, to `keep` the answer in), or the stored answer
    of the request that claimed it first. Raises KeyReused when that request was another one.
    The key's format is the caller's to check (`check_key` for HTTP; a device's request id has its own)."""
    now = now or utcnow()
    while True:
        record = IdempotencyRecord(scope=scope, key=key, request_hash=fingerprint, created_at=now)
        try:
            with uow.session.begin_nested():  # a savepoint: a lost race undoes the insert only
                uow.session.add(record)
            return record
        except IntegrityError:
            pass
        # Locked: two requests that both find an expired record must not both delete it (the
        # second would delete nothing and fail); the second waits, finds it gone, and claims again.
        first = uow.session.exec(
            select(IdempotencyRecord)
            .where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one_or_none()
        if first is None:  # its request rolled back after we collided with it: claim again
            continue
        if _aware(first.created_at) <= now - TTL:  # expired, not pruned yet: the key is free again
            uow.session.delete(first)
            uow.session.flush()
            continue
        if first.request_hash != fingerprint:
            raise KeyReused(f"idempotency key {key!r} was already used with a different request")
        assert first.status_code is not None  # committed with its answer, never without
        return Stored(first.status_code, first.body)


def keep(uow: UnitOfWork, record: IdempotencyRecord, status_code: int, body: Any) -> None:
    """Store the answer of the request that claimed `record`; committed with its change."""
    record.status_code, record.body = status_code, body
    uow.session.add(record)
    uow.session.flush()


def prune(uow: UnitOfWork, now: datetime | None = None, batch: int = PRUNE_BATCH) -> int:
    """Delete up to `batch` expired records, oldest first; the number deleted."""
    cutoff = (now or utcnow()) - TTL
    ids = uow.session.exec(
        select(IdempotencyRecord.id)
        .where(col(IdempotencyRecord.created_at) <= cutoff)
        .order_by(col(IdempotencyRecord.created_at))
        .limit(batch)
    ).all()
    if ids:
        uow.session.execute(delete(IdempotencyRecord).where(col(IdempotencyRecord.id).in_(ids)))
    return len(ids)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
