"""`Idempotency-Key` on the writes a client may have to retry without knowing whether they happened.

A route takes `once: Idempotent` and answers `return once.keep(answer)`. With the header, the
first request claims the key in the request's unit of work and its answer is stored there, so the
commit that makes the change also keeps the answer; a retry with the same key and body gets that
answer again, marked `Idempotent-Replayed: true`, and changes nothing. The same key with another
body answers 422; a malformed key 400. A retry that arrives while the first request is still
running waits for it, then gets its answer. Without the header a route behaves as without this.
The rule itself is `core.services.idempotency`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

from fastapi import Depends, FastAPI, Header, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from api.deps import CurrentUser, UowDep
from core.models import IdempotencyRecord
from core.services import idempotency
from core.unit_of_work import UnitOfWork

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
A = TypeVar("A")


class Replay(Exception):
    """Raised before the route runs when the key already has an answer: the handler sends it."""

    def __init__(self, stored: idempotency.Stored) -> None:
        super().__init__("replay")
        self.stored = stored


class Once:
    """Hands the route's answer to the claimed record, if the request carried a key."""

    def __init__(self, uow: UnitOfWork, record: IdempotencyRecord | None, status_code: int) -> None:
        self._uow, self._record, self._status_code = uow, record, status_code
        self.kept = record is None

    def keep(self, answer: A) -> A:
        if self._record is not None:
            idempotency.keep(self._uow, self._record, self._status_code, jsonable_encoder(answer))
            self.kept = True
        return answer


KeyHeader = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description="A fresh id per user action, 1 to 255 printable ASCII characters; send it again on a retry "
        "and the write is done once, the retry getting the first answer (kept 24 h).",
    ),
]


async def idempotent(request: Request, caller: CurrentUser, uow: UowDep, key: KeyHeader = None) -> AsyncIterator[Once]:
    route = request.scope["route"]
    if key is None:
        yield Once(uow, None, route.status_code or 200)
        return
    try:
        idempotency.check_key(key)
    except idempotency.InvalidKey as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{HEADER}: {exc}") from exc
    scope = f"{caller.sub}|{request.path_params.get('restaurant_id')}|{request.method} {route.path}"
    fingerprint = idempotency.request_hash(request.method, request.url.path, await request.body())
    try:
        claimed = await run_in_threadpool(idempotency.claim, uow, scope, key, fingerprint)
    except idempotency.KeyReused as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    if isinstance(claimed, idempotency.Stored):
        raise Replay(claimed)
    once = Once(uow, claimed, route.status_code or 200)
    yield once
    if not once.kept:  # a route that takes a key must keep its answer, or the retry would find none
        raise RuntimeError(f"{route.path} claimed an idempotency key and did not keep its answer")


Idempotent = Annotated[Once, Depends(idempotent, scope="function")]


def install(app: FastAPI) -> None:
    """Answer a replay with the stored status and body."""

    async def replay(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Replay)
        return JSONResponse(exc.stored.body, exc.stored.status_code, headers={REPLAYED: "true"})

    app.add_exception_handler(Replay, replay)
