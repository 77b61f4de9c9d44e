"""Running the NATS auth-callout responder: the decider over this deployment's key, policy and database.

`run_responder` is what `orderbus cluster up` (or any process) awaits to serve a NATS cluster's
callout. The denylist is the embedded broker's (`RevocationWatch`: the database re-read twice a second),
and each change kicks the connections it now refuses, so a revoked device is off NATS within a second.
"""

from __future__ import annotations

import asyncio
import signal

import prometheus_client

from broker.nats.callout import Credentials, Decider
from broker.nats.responder import Responder
from cli.runtime import Parts, RevocationWatch
from config.settings import Settings


async def start_responder(
    parts: Parts, servers: str | list[str], credentials: Credentials | None = None, *, workers: int = 1
) -> tuple[Responder, RevocationWatch]:
    """A started responder and its revocation watch; stop both with `stop_responder`."""
    credentials = credentials or Credentials.load_or_create(parts.settings.data_dir)
    revocations = RevocationWatch(parts.engine)
    revocations.start()
    decider = Decider(parts.tokens, parts.policy, revocations.refuses, credentials.issuer_seed)
    responder = Responder(decider, workers=workers)
    try:
        await responder.start(servers, credentials)
    except BaseException:
        await revocations.stop()
        raise
    revocations.on_refresh = responder.on_denylist_change
    await responder.kick_refused()  # devices revoked while no responder ran, still connected
    return responder, revocations


async def stop_responder(responder: Responder, revocations: RevocationWatch) -> None:
    await revocations.stop()
    await responder.stop()


async def serve(settings: Settings, nats_url: str | list[str], *, workers: int = 1) -> None:
    """`orderbus responder`: run until SIGINT/SIGTERM, with /metrics on `metrics_port` when set."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port, addr=settings.host)
    await run_responder(settings, nats_url, stop, workers=workers)


async def run_responder(
    settings: Settings, nats_url: str | list[str], stop: asyncio.Event | None = None, *, workers: int = 1
) -> None:
    """Serve the callout until `stop` is set (or the task is cancelled). The database must be at this
    code's schema (`orderbus db upgrade`); the credentials come from the data directory."""
    parts = Parts.build(settings, upgrade=False)
    try:
        responder, revocations = await start_responder(parts, nats_url, workers=workers)
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            await stop_responder(responder, revocations)
    finally:
        parts.engine.dispose()
