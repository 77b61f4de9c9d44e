"""The idempotency rule on a temporary SQLite file: claim, keep, replay, refuse, expire, prune.

Each unit of work here stands for one request; only what its owner commits counts, the way the
API's request transaction and the ingest's per-message transaction use it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, func
from sqlmodel import select

from core.models import IdempotencyRecord, utcnow
from core.services import idempotency
from core.unit_of_work import UnitOfWork

SCOPE = "user-1|7|POST /api/v1/restaurants/{restaurant_id}/orders"


def records(engine: Engine) -> int:
    with UnitOfWork(engine) as uow:
        return uow.session.exec(select(func.count()).select_from(IdempotencyRecord)).one()


def first_request(engine: Engine, key: str = "k1", fingerprint: str = "h1", now=None) -> None:
    with UnitOfWork(engine) as uow:
        claimed = idempotency.claim(uow, SCOPE, key, fingerprint, now)
        assert isinstance(claimed, IdempotencyRecord)
        idempotency.keep(uow, claimed, 201, {"id": 1})
        uow.commit()


def test_a_kept_answer_is_replayed_and_another_request_is_refused(engine: Engine):
    first_request(engine)
    with UnitOfWork(engine) as uow:
        assert idempotency.claim(uow, SCOPE, "k1", "h1") == idempotency.Stored(201, {"id": 1})
        with pytest.raises(idempotency.KeyReused, match="different request"):
            idempotency.claim(uow, SCOPE, "k1", "h2")
        claimed = idempotency.claim(uow, SCOPE.replace("user-1", "user-2"), "k1", "h2")  # another caller
        assert isinstance(claimed, IdempotencyRecord)


def test_a_claim_that_is_not_committed_leaves_the_key_free(engine: Engine):
    with UnitOfWork(engine) as uow:  # the request failed: its unit of work rolls back
        assert isinstance(idempotency.claim(uow, SCOPE, "k1", "h1"), IdempotencyRecord)
    assert records(engine) == 0
    first_request(engine, fingerprint="h2")  # the retry may even differ: nothing was done the first time
    assert records(engine) == 1


def test_a_key_is_free_again_after_24_hours(engine: Engine):
    start = utcnow()
    first_request(engine, now=start)
    with UnitOfWork(engine) as uow:
        almost = start + idempotency.TTL - timedelta(seconds=1)
        assert isinstance(idempotency.claim(uow, SCOPE, "k1", "h1", almost), idempotency.Stored)
        claimed = idempotency.claim(uow, SCOPE, "k1", "h1", start + idempotency.TTL)
        assert isinstance(claimed, IdempotencyRecord) and claimed.created_at == start + idempotency.TTL
        idempotency.keep(uow, claimed, 201, {"id": 2})
        uow.commit()
    assert records(engine) == 1


def test_prune_deletes_expired_records_in_batches_oldest_first(engine: Engine):
    now = utcnow()
    with UnitOfWork(engine) as uow:
        for n in range(25):
            age = idempotency.TTL + timedelta(minutes=n) if n < 20 else timedelta(hours=1)
            uow.session.add(
                IdempotencyRecord(scope=SCOPE, key=f"k{n}", request_hash="h", status_code=200, created_at=now - age)
            )
        uow.commit()
    deleted = []
    for _ in range(4):
        with UnitOfWork(engine) as uow:
            deleted.append(idempotency.prune(uow, now, batch=8))
            uow.commit()
    assert deleted == [8, 8, 4, 0]
    with UnitOfWork(engine) as uow:
        left = sorted(uow.session.exec(select(IdempotencyRecord.key)).all())
    assert left == [f"k{n}" for n in range(20, 25)]


def test_the_fingerprint_ignores_json_spacing_and_key_order_but_not_the_request():
    a = idempotency.request_hash("POST", "/orders", b'{"a": 1, "b": [1, 2]}')
    assert a == idempotency.request_hash("post", "/orders", b'{"b":[1,2],"a":1}')
    assert a == idempotency.request_hash("POST", "/orders", {"b": [1, 2], "a": 1})
    assert a != idempotency.request_hash("POST", "/orders/2", b'{"a": 1, "b": [1, 2]}')
    assert a != idempotency.request_hash("PUT", "/orders", b'{"a": 1, "b": [1, 2]}')
    assert a != idempotency.request_hash("POST", "/orders", b'{"a": 2, "b": [1, 2]}')
    assert idempotency.request_hash("POST", "/x", b"\xff not json") != idempotency.request_hash("POST", "/x", b"")
    assert idempotency.request_hash("POST", "/x", b'{"s": "\\ud800"}')  # a lone surrogate hashes


@pytest.mark.parametrize("key", ["a", "k" * 255, " ~", "550e8400-e29b-41d4-a716-446655440000"])
def test_keys_of_printable_ascii_up_to_255_are_valid(key: str):
    assert idempotency.check_key(key) == key


@pytest.mark.parametrize("key", ["", "k" * 256, "é", "a\nb", "a\tb", "\x00", "\x7f", "key\u2028"])
def test_other_keys_are_refused_with_the_rule(key: str):
    with pytest.raises(idempotency.InvalidKey, match="1 to 255 printable ASCII characters"):
        idempotency.check_key(key)
