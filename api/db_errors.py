"""A database that cannot answer right now: 503 with Retry-After and one JSON line, never a 500.

Why: on PostgreSQL the database is another machine that restarts, fails over or drops connections.
A request caught by that has changed nothing (its transaction is rolled back with the connection),
so the honest answer is "try again shortly", with the wait in `Retry-After`, and not a 500 with a
traceback that looks like a bug. One window is ambiguous: a connection lost during the COMMIT itself
may have committed; a write retried with its Idempotency-Key then gets the first answer. The
engine's `pool_pre_ping` replaces dead connections, so the API recovers by itself once the server
is back; nothing here retries.

A deadlock or serialization failure gets the same answer, by choice: the request is not retried
in-process (its body has been read, its dependencies have run, and a write may have an
Idempotency-Key whose claim went with the rollback), and the lock order of `core.locking` makes a
deadlock a bug to find, not a load to carry. A client retries, safely with an Idempotency-Key.
Each answer counts in `orderbus_http_database_unavailable_total{reason}`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger("orderbus.api")
RETRY_AFTER_SECONDS = 2
DATABASE_UNAVAILABLE = Counter(
    "orderbus_http_database_unavailable",
    "Requests answered 503 because the database could not serve them, by reason "
    "(unavailable, deadlock, serialization, pool_timeout)",
    ["reason"],
)
_SQLSTATES = {"40P01": "deadlock", "40001": "serialization"}


def reason_of(exc: Exception) -> str | None:
    """Why the database could not serve the request, or None for an error that is a bug (500)."""
    if isinstance(exc, PoolTimeout):
        return "pool_timeout"
    if not isinstance(exc, DBAPIError):
        return None
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _SQLSTATES:
        return _SQLSTATES[sqlstate]
    if isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated:
        return "unavailable"  # refused, reset, server gone mid-query, SQLite's "database is locked"
    return None


def install(app: FastAPI) -> None:
    async def database_failed(_request: Request, exc: Exception) -> JSONResponse:
        reason = reason_of(exc)
        if reason is None:
            raise exc  # not the database's availability: the server error it was before
        DATABASE_UNAVAILABLE.labels(reason=reason).inc()
        cause = getattr(exc, "orig", None) or exc
        log.warning("database unavailable (%s), answered 503: %s", reason, " ".join(str(cause).split())[:300])
        return JSONResponse(
            {"detail": f"the database is unavailable ({reason}); retry shortly"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    app.add_exception_handler(DBAPIError, database_failed)
    app.add_exception_handler(PoolTimeout, database_failed)
