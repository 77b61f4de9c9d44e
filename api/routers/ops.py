"""Operations endpoints: liveness, readiness, Prometheus metrics, a JSON summary, and the ops page.

- `GET /healthz`: the process is alive (no dependency is checked).
- `GET /readyz`: what this process depends on works; 503 otherwise, the body says which check
  failed and why. The composition root chooses the checks (`app.state.ready_checks`) by the parts
  the process runs: the database always; the broker (an MQTT CONNECT to the embedded one, the
  bridge's own connections, or for the API alone the broker named by `mqtt_host`/`mqtt_port` when
  set); the outbox lag where a relay runs. Without a choice, the database only.
- `GET /metrics`: Prometheus text format for the whole process (`api.metrics`): the process registry,
  this app's database, and the collectors the composition root put in `app.state.collectors`.
- `GET /api/v1/ops/summary`: the figures of the ops page and `orderbus status`, as JSON.
- `GET /ops` (+ `/ops/ops.js`, `/ops/ops.css`): the ops page, live charts polling the summary.

None of these needs a token: put them behind the network boundary that guards your
Prometheus (docs/ops.md). They show counts only, never tenant data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import text

from api import metrics
from api.summary import summarize
from core.metrics import DatabaseCollector, outbox_figures

log = logging.getLogger("orderbus.ops")
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
ASSETS = {"ops.js": "text/javascript", "ops.css": "text/css"}
PROBE_TIMEOUT_SECONDS = 3.0
PROBE_SUB = "orderbus-readyz"
STARTED = time.time()
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter()


def collectors_of(request: Request) -> list[Collector]:
    """The state this process can see: the app's database, and what the composition root wired into
    `app.state.collectors` (the broker's tables, when this process runs one)."""
    return [DatabaseCollector(request.app.state.engine), *getattr(request.app.state, "collectors", ())]


# --- liveness and readiness --------------------------------------------------------------------


@router.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, Any]:
    return {"status": "ok", "uptime_seconds": round(time.time() - STARTED, 1)}


# A check reads what it needs from the app's state (engine, settings, tokens) when it runs.
Check = Callable[[Any], Awaitable[dict[str, Any]]]


def database_check() -> Check:
    return lambda state: _database_check(state.engine)


def broker_probe(host: str, port: int, tls: ssl.SSLContext | None = None) -> Check:
    """A broker this process talks to, by a real MQTT CONNECT (over TLS with a context: settings.mqtt_tls_context)."""
    return lambda state: _broker_check(host, port, state.tokens, tls)


def outbox_check() -> Check:
    """The oldest unpublished event against `ready_max_outbox_lag_seconds`."""
    return lambda state: _relay_check(state.engine, state.settings.ready_max_outbox_lag_seconds)


def connections_check(address: str, connected: dict[str, Callable[[], bool]]) -> Check:
    """The broker as this process's own clients see it (the bridge's relay and ingest)."""

    async def check(_state: Any) -> dict[str, Any]:
        down = [name for name, is_connected in connected.items() if not is_connected()]
        result: dict[str, Any] = {"ok": not down, "address": address}
        if down:
            result["error"] = f"not connected to the broker: {', '.join(down)}"
        return result

    return check


def listeners_check(host: str, ports: dict[str, int]) -> Check:
    """Listeners beside the MQTT one (WebSocket, TLS) accept a TCP connection."""

    async def check(_state: Any) -> dict[str, Any]:
        closed = {}
        for name, port in ports.items():
            try:
                _reader, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                closed[name] = f"{host}:{port}: {_describe(exc)}"
                continue
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        result: dict[str, Any] = {"ok": not closed, "ports": ports}
        if closed:
            result["error"] = "; ".join(f"{name} {why}" for name, why in closed.items())
        return result

    return check


def ops_app(settings: Any, engine: Any, tokens: Any, collectors: list[Collector], checks: dict[str, Check]) -> FastAPI:
    """These endpoints alone, for a process without the API (`metrics_port` of a broker or bridge)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings, app.state.engine, app.state.tokens = settings, engine, tokens
    app.state.collectors, app.state.ready_checks = collectors, checks
    app.include_router(router)
    return app


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    chosen: dict[str, Check] = getattr(state, "ready_checks", None) or {"database": database_check()}
    results = await asyncio.gather(*(_check(check, state) for check in chosen.values()))
    checks = dict(zip(chosen, results, strict=True))
    failed = [name for name, check in checks.items() if not check["ok"]]
    body = {"status": "not ready" if failed else "ready", "failed": failed, "checks": checks}
    return JSONResponse(body, status_code=503 if failed else 200, headers={"Cache-Control": "no-store"})


async def _check(check: Check, state: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(check(state), PROBE_TIMEOUT_SECONDS)
    except TimeoutError:
        result = {"ok": False, "error": f"no answer within {PROBE_TIMEOUT_SECONDS:g} s"}
    except Exception as exc:  # a check that fails says why; it never fails the endpoint
        result = {"ok": False, "error": _describe(exc)}
    result["seconds"] = round(time.perf_counter() - started, 4)
    return result


def _describe(exc: BaseException) -> str:
    message = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


async def _in_thread(function: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


async def _database_check(engine: Any) -> dict[str, Any]:
    def ping() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    await _in_thread(ping)
    return {"ok": True}


async def _relay_check(engine: Any, threshold: float) -> dict[str, Any]:
    pending, age = await _in_thread(outbox_figures, engine)
    result: dict[str, Any] = {
        "ok": age <= threshold,
        "pending": pending,
        "oldest_age_seconds": round(age, 3),
        "threshold_seconds": threshold,
    }
    if not result["ok"]:
        result["error"] = f"the oldest unpublished event is {age:.0f} s old (threshold {threshold:g} s)"
    return result


def _mqtt_string(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, password: str, keepalive: int = 10) -> bytes:
    """An MQTT 3.1.1 CONNECT: clean session, username = client id, the token as password."""
    body = _mqtt_string("MQTT") + bytes([4, 0x80 | 0x40 | 0x02]) + struct.pack("!H", keepalive)
    body += _mqtt_string(client_id) + _mqtt_string(client_id) + _mqtt_string(password)
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes([0x10]) + bytes(encoded) + body


async def probe_broker(host: str, port: int, token: str, client_id: str, tls: ssl.SSLContext | None = None) -> int:
    """Open a TCP (or TLS) connection, send CONNECT, return the CONNACK code; DISCONNECT cleanly after."""
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    try:
        writer.write(connect_packet(client_id, token))
        await writer.drain()
        connack = await reader.readexactly(4)
        if connack[0] != 0x20 or connack[1] != 2:
            raise ConnectionError(f"expected a CONNACK, got {connack[:2].hex()}")
        if connack[3] == 0:
            writer.write(b"\xe0\x00")  # DISCONNECT: no Last Will, a clean end
            await writer.drain()
        return connack[3]
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _broker_check(host: str, port: int, tokens: Any, tls: ssl.SSLContext | None) -> dict[str, Any]:
    address = f"{host}:{port}"
    token = tokens.issue(sub=PROBE_SUB, role="ops", rid=None, audience="mqtt", ttl_seconds=60)
    try:
        code = await probe_broker(host, port, token, f"{PROBE_SUB}:{secrets.token_hex(4)}", tls)
    except (OSError, asyncio.IncompleteReadError) as exc:
        return {"ok": False, "address": address, "error": _describe(exc)}
    if code != 0:
        return {"ok": False, "address": address, "error": f"the broker refused the probe's CONNECT (CONNACK {code})"}
    return {"ok": True, "address": address}


# --- metrics -----------------------------------------------------------------------------------


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics(request: Request) -> Response:
    try:
        body = metrics.exposition(collectors_of(request))
    except Exception:  # a broken collector must not take the counters down with it
        log.exception("rendering /metrics failed; serving the process counters only")
        body = generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


@router.get("/api/v1/ops/summary", tags=["ops"])
def read_ops_summary(request: Request) -> dict[str, Any]:
    """The figures of the ops page and `orderbus status`: connections, traffic counters (rates are the
    client's to compute), outbox lag, refusals, drops, devices by kind and presence."""
    try:
        families = metrics.families(collectors_of(request))
    except Exception:
        log.exception("reading the metrics for the ops summary failed")
        families = list(REGISTRY.collect())
    summary = summarize(families)
    settings = request.app.state.settings
    summary["ready_max_outbox_lag_seconds"] = settings.ready_max_outbox_lag_seconds
    if settings.broker_url:  # no broker tables in this process: say so, rather than show zero connections
        summary["broker_engine"] = "nats"
        summary["broker_note"] = (
            "the bus runs on a NATS cluster: connections, traffic and retained counts are on the nodes' "
            "monitoring endpoints (/connz, /varz, /jsz), not here; $SYS/# carries nothing on NATS"
        )
    else:
        summary["broker_engine"] = "embedded"
    return summary


# --- the ops page ------------------------------------------------------------------------------


@router.get("/ops", include_in_schema=False)
def ops_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "ops.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/ops/{asset}", include_in_schema=False)
def ops_asset(asset: str) -> FileResponse:
    if asset not in ASSETS:
        raise HTTPException(404, "not found")
    return FileResponse(STATIC_DIR / asset, media_type=ASSETS[asset], headers={"Cache-Control": "no-cache"})
