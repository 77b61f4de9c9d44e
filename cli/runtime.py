"""Composition root: builds the parts from settings and runs any subset of them in one process."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from api.main import create_app
from api.routers import ops
from bridge.handlers import DeviceRules
from bridge.ingest import Ingest
from bridge.relay import Relay
from broker.clients import BrokerClients
from broker.limits import Limits
from broker.metrics import BrokerCollector
from broker.policy import Policy
from broker.server import Listeners, OrderbusBroker, start_broker
from broker.store import SqliteJournal, for_broker, journal_path
from cli.bridge_role import BridgeRole
from config.settings import Settings
from core import db, logs
from core.services.devices import DeviceDenylist, token_denylist
from core.tokens import TokenService, load_or_create_key
from core.wake import SOCKET_NAME, SocketWake

log = logging.getLogger("orderbus")
SERVICE_TOKEN_TTL = 3600


class PortInUse(RuntimeError):
    """A port we must listen on is taken; the message names the flag that changes it."""


def token_service(settings: Settings) -> TokenService:
    """The deployment's signing key (configured, or the data directory's), and the keys of a rotation
    still accepted; none of them ever appears in a log line."""
    key = load_or_create_key(settings.data_dir, settings.jwt_key.get_secret_value() if settings.jwt_key else None)
    previous = tuple(k.get_secret_value().encode() for k in settings.jwt_previous_keys)
    for secret in (key, *previous):
        logs.add_secret(secret)
    return TokenService(key, previous)


@dataclass
class Parts:
    settings: Settings
    engine: Engine
    tokens: TokenService
    policy: Policy

    @classmethod
    def build(cls, settings: Settings, *, upgrade: bool = True) -> Parts:
        """`upgrade`: bring the schema to this code's head (`orderbus up`, which owns its database);
        otherwise refuse a database at another revision (`db.SchemaOutOfDate`): processes run apart
        share theirs, and only `orderbus db upgrade` changes it."""
        policy = Policy.load(settings.acl_policy)  # a bad ACL file: one line, before anything is made
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        tokens = token_service(settings)
        engine = db.make_engine(settings.db_url)
        try:
            db.upgrade(engine) if upgrade else db.check_current(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(settings, engine, tokens, policy)

    def device_grants(self, claims: dict[str, Any]) -> Callable[[str], bool]:
        """What a device's token may receive, for the API's device catch-up: the broker's own policy."""
        return self.policy.grants(claims).may_receive

    def service_token_factory(self, sub: str) -> Callable[[], str]:
        return lambda: self.tokens.issue(
            sub=sub, role="service", rid=None, audience="mqtt", ttl_seconds=SERVICE_TOKEN_TTL
        )


def bind_error(host: str, port: int) -> OSError | None:
    """Why nothing could listen on host:port now (None: it could)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc
    return None


def check_ports(host: str, ports: dict[str, int]) -> None:
    """Fail with one clear line before anything starts, instead of a traceback half-way."""
    for flag, port in ports.items():
        exc = bind_error(host, port)
        if exc is None:
            continue
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(f"port {port} on {host} is already in use; choose another with {flag}")
        raise PortInUse(f"cannot listen on {host}:{port} ({exc.strerror}); check {flag} and --host")


def check_mqtt_listener(endpoints: list[tuple[str, int]]) -> None:
    """On NATS: one of the cluster nodes' MQTT listeners answers (the bus's clients fail over to the others),
    or one line naming the flag (PortInUse's exit)."""
    failures = []
    for host, port in endpoints:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError as exc:
            failures.append(f"{host}:{port} ({exc.strerror or exc})")
    flag = f"--mqtt-port {endpoints[0][1]}" if len(endpoints) == 1 else "--mqtt-host"
    raise BrokerUnreachable(
        f"{flag}: no MQTT listener at {', '.join(failures)}; is the cluster up "
        "(`orderbus cluster up`), and is this a node's MQTT port?"
    )


def preflight(settings: Settings, *, broker: bool, api: bool) -> None:
    """What makes a start fail, checked before anything is set up (the CLI runs it before the database is
    touched): a bad --mqtt-host or --broker, a cluster that does not answer, a port that is taken."""
    ports: dict[str, int] = {}
    settings.mqtt_endpoints  # noqa: B018 - EndpointError (a bad --mqtt-host) before anything starts
    on_nats = settings.broker_url is not None
    if on_nats:
        settings.nats_urls  # noqa: B018 - BrokerUrlError before anything starts
        check_mqtt_listener(settings.mqtt_endpoints)
    if broker and not on_nats:
        ports |= {"--mqtt-port": settings.mqtt_port, "--ws-port": settings.ws_port}
        if settings.tls_certfile and settings.tls_keyfile:
            tls = {"tls_port": settings.tls_port, "wss_port": settings.wss_port}
            ports |= {f"ORDERBUS_{name.upper()}": port for name, port in tls.items() if port}
    if api:
        ports["--http-port"] = settings.http_port
    elif settings.metrics_port:
        ports["ORDERBUS_METRICS_PORT"] = settings.metrics_port
    check_ports(settings.host, ports)


class BrokerUnreachable(RuntimeError):
    """On NATS: the cluster's MQTT listener or its NATS port does not answer; the message names the flag."""


class RevocationWatch:
    """The device denylist, re-read from the database twice a second so that a revoked device is
    refused at CONNECT and disconnected while connected, whichever process revoked it; a commit in
    this process (`poke`) re-reads it at once. `on_refresh` runs after each read (the broker's sweep)."""

    def __init__(self, engine: Engine, interval_seconds: float = 0.5) -> None:
        self._engine = engine
        self._interval = interval_seconds
        self._denylist = DeviceDenylist(frozenset(), {})
        self._task: asyncio.Task[None] | None = None
        self._poked: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.on_refresh: Callable[[], None] = lambda: None

    def refuses(self, claims: dict) -> bool:
        return self._denylist.refuses(claims)

    def refresh(self) -> bool:
        """Re-read the denylist; True when it changed (only then do connections need a look)."""
        denylist = token_denylist(self._engine)
        changed, self._denylist = denylist != self._denylist, denylist
        return changed

    def poke(self) -> None:
        """Thread-safe: called after a commit in this process."""
        if self._loop is not None and self._poked is not None:
            self._loop.call_soon_threadsafe(self._poked.set)

    def start(self) -> None:
        self.refresh()
        self._loop, self._poked = asyncio.get_running_loop(), asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="orderbus-revocation-watch")

    async def stop(self) -> None:
        self._loop = self._poked = None  # a commit after the stop pokes nothing (its loop may be closed by then)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        loop, poked = self._loop, self._poked  # its own: `stop` lets go of them before it cancels this
        assert loop is not None and poked is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(poked.wait(), self._interval)
            poked.clear()
            try:
                if await loop.run_in_executor(None, self.refresh):
                    self.on_refresh()
            except Exception:
                log.exception("could not refresh the device denylist; keeping the previous one")


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the runtime decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Runtime:
    """Broker, API and bridge (relay + ingest) as one unit; each can be left out."""

    def __init__(self, parts: Parts, *, broker: bool = True, api: bool = True, bridge: bool = True) -> None:
        self.parts = parts
        self.settings = parts.settings
        self.with_broker, self.with_api, self.with_bridge = broker, api, bridge
        self.broker: OrderbusBroker | None = None
        # on NATS (`broker_url`): the auth-callout responder instead of the embedded broker
        settings_on_nats = parts.settings.broker_url is not None
        self.on_nats = settings_on_nats
        self.responder: Any = None  # (Responder, RevocationWatch) while it runs
        self._journal: SqliteJournal | None = None
        # relay, ingest, sweeper: run only while this process holds the bridge lease (cli/bridge_role.py)
        self.bridge: BridgeRole | None = None
        # A relay in another process (a separate bridge, or the lease holder while this one stands
        # by) is woken through the data directory's socket on SQLite; on PostgreSQL the commit's
        # NOTIFY does it (core/unit_of_work.py).
        self.remote_wake: SocketWake | None = None
        if api and parts.engine.dialect.name == "sqlite":
            self.remote_wake = SocketWake(self.settings.data_dir / SOCKET_NAME)
        self.revocations = RevocationWatch(parts.engine)
        # the HTTP server: the API, or in a process without it the ops endpoints on `metrics_port`
        self._api_server: _ApiServer | None = None
        self._api_task: asyncio.Task[None] | None = None
        # state read at scrape time, for the exposition: the broker's tables (up = 0 while it is stopped)
        embedded = broker and not settings_on_nats
        self.collectors: list[Collector] = [BrokerCollector(lambda: self.broker)] if embedded else []

    @property
    def relay(self) -> Relay | None:
        """The relay while this process is the active bridge; None on standby or without a bridge."""
        active = self.bridge.active if self.bridge else None
        return active.relay if active else None

    @property
    def ingest(self) -> Ingest | None:
        active = self.bridge.active if self.bridge else None
        return active.ingest if active else None

    @property
    def rules(self) -> DeviceRules | None:
        active = self.bridge.active if self.bridge else None
        return active.rules if active else None

    @property
    def listeners(self) -> Listeners:
        s = self.settings
        return Listeners(s.host, s.mqtt_port, s.ws_port, s.tls_port, s.wss_port, s.tls_certfile, s.tls_keyfile)

    @property
    def limits(self) -> Limits:
        """The broker's limits, with the persistent-session bounds the settings override (tests shrink them)."""
        s, overrides = self.settings, {}
        if s.mqtt_session_expiry_seconds is not None:
            overrides["session_expiry_seconds"] = s.mqtt_session_expiry_seconds
        if s.mqtt_max_offline_queue is not None:
            overrides["max_offline_queue"] = s.mqtt_max_offline_queue
        return Limits(**overrides)

    def wake_relay(self) -> None:
        """After every commit that wrote events: publish them, and re-read revocations."""
        if (relay := self.relay) is not None:
            relay.wake()
        elif self.remote_wake is not None:
            self.remote_wake()
        self.revocations.poke()

    async def start(self) -> None:
        preflight(self.settings, broker=self.with_broker, api=self.with_api)
        try:
            await self._start_parts()
        except BaseException:
            await self.stop()  # whatever did start (the broker, the relay's threads) stops again
            raise

    async def _start_parts(self) -> None:
        if self.with_broker:
            await (self.start_responder() if self.on_nats else self.start_broker())
        if self.with_bridge:
            self.bridge = BridgeRole(self.parts, self.wake_relay)
            self.bridge.start()  # active at once when the lease is free; otherwise a standby
        if self.with_api:
            app = create_app(
                self.settings, self.parts.engine, self.parts.tokens, self.wake_relay, self.parts.device_grants
            )
            app.state.collectors = self.collectors  # for /metrics; the API adds its own database
            if self.with_broker:  # the client list and disconnect (api.routers.ops_clients)
                app.state.clients = self.clients()
            app.state.ready_checks = self.ready_checks()
            await self._serve_http(app, self.settings.http_port, "--http-port")
        elif port := self.settings.metrics_port:  # no API in this process: /metrics, /readyz on a port of their own
            s = self.settings
            app = ops.ops_app(s, self.parts.engine, self.parts.tokens, self.collectors, self.ready_checks())
            await self._serve_http(app, port, "ORDERBUS_METRICS_PORT")

    def ready_checks(self) -> dict[str, ops.Check]:
        """What `/readyz` checks: what the parts in this process depend on, and nothing else."""
        s = self.settings
        checks = {"database": ops.database_check()}  # every part reads or writes it
        if self.with_broker and self.on_nats:  # the responder's NATS connection: no login on the cluster without it
            checks["responder"] = ops.connections_check(s.broker_url or "", {"responder": self.responder_connected})
        if self.with_broker and not self.on_nats:  # its own listeners
            checks["broker"] = ops.broker_probe(s.local_host, s.mqtt_port)
            others = {"ws": s.ws_port}
            if s.tls_certfile and s.tls_keyfile:
                others |= {name: port for name, port in (("tls", s.tls_port), ("wss", s.wss_port)) if port}
            checks["listeners"] = ops.listeners_check(s.local_host, others)
        elif (bridge := self.bridge) is not None:  # the broker as the relay and the ingest see it
            connected = {"relay": lambda: bridge.connected("relay"), "ingest": lambda: bridge.connected("ingest")}
            checks["broker"] = ops.connections_check(f"{s.broker_host}:{s.mqtt_port}", connected)
        elif s.broker_configured:  # the API alone, told where the bus's broker is
            checks["broker"] = ops.broker_probe(*s.mqtt_endpoints[0], s.mqtt_tls_context())
        if self.with_bridge:
            checks["relay"] = ops.outbox_check()
        return checks

    async def start_broker(self) -> None:
        """The broker, with what its store kept of the last run (docs/ops.md, "Broker state on disk")."""
        self.revocations.start()
        limits = self.limits
        journal = SqliteJournal(journal_path(self.settings.data_dir))
        stored = await asyncio.to_thread(
            journal.load,
            session_expiry_seconds=limits.session_expiry_seconds,
            max_offline_queue=limits.max_offline_queue,
        )
        journal.start()
        try:
            self.broker = await start_broker(
                self.listeners,
                self.parts.tokens,
                self.parts.policy,
                limits,
                refuses=self.revocations.refuses,
                journal=journal,
                snapshot=for_broker(stored),
            )
        except BaseException:
            await journal.close()
            raise
        self._journal = journal
        self.revocations.on_refresh = self.broker.guard.sweep
        sys_topics = self.broker.plugins_manager.get_plugin("MetricsPlugin")
        if sys_topics is not None:
            sys_topics.set_interval(self.settings.sys_interval_seconds)

    async def start_responder(self) -> None:
        """On NATS: the auth-callout responder of this deployment (cli/callout.py), in this process."""
        from cli.callout import start_responder  # the `nats` extra; cli/callout.py imports this module

        self.responder = await start_responder(self.parts, self.settings.nats_urls)

    def clients(self) -> Any:
        """The connected MQTT clients as this process's broker sees them: the embedded broker's tables, or on
        NATS the cluster's CONNZ through the responder (`broker.nats.clients`)."""
        if not self.on_nats:
            return BrokerClients(lambda: self.broker)
        from broker.nats.clients import NatsClients  # the `nats` extra

        def system() -> Any:
            return self.responder[0].system if self.responder is not None else None

        return NatsClients(system, self.responder[0].decider.account, asyncio.get_running_loop())

    def responder_connected(self) -> bool:
        callout = getattr(self.responder[0], "_callout", None) if self.responder is not None else None
        return callout is not None and bool(callout.is_connected)

    async def stop_broker(self) -> None:
        if self.responder is not None:
            from cli.callout import stop_responder

            responder, self.responder = self.responder, None
            await stop_responder(*responder)
        if self.broker is not None:
            await self.broker.shutdown()
            self.broker = None
        if self._journal is not None:  # after the broker: what its shutdown recorded is written too
            await self._journal.close()
            self._journal = None
        await self.revocations.stop()

    async def _serve_http(self, app: Any, port: int, flag: str) -> None:
        config = uvicorn.Config(
            app,
            host=self.settings.host,
            port=port,
            log_level="warning",
            log_config=None,  # uvicorn logs through the root handler: JSON lines, redaction
            lifespan="off",
        )
        self._api_server = _ApiServer(config)
        self._api_task = asyncio.create_task(self._serve_api(self._api_server, port, flag))
        while not self._api_server.started:
            if self._api_task.done():
                self._api_task.result()
                raise RuntimeError("the API server stopped during start-up")
            await asyncio.sleep(0.02)

    async def _serve_api(self, server: _ApiServer, port: int, flag: str) -> None:
        """uvicorn exits the process (SystemExit) when it cannot bind, e.g. when another process took
        the port between `check_ports` and here; that would stop the whole event loop, broker
        included. Turn it into the same one-line error `check_ports` gives."""
        try:
            await server.serve()
        except SystemExit as exc:
            where = f"{self.settings.host}:{port}"
            raise PortInUse(f"could not listen on {where}; choose another with {flag}") from exc

    async def stop(self) -> None:
        """API first (no new writes), then the relay drains the outbox, then the broker."""
        if self._api_server is not None and self._api_task is not None and not self._api_task.done():
            self._api_server.should_exit = True
            await self._api_task
        if self.bridge is not None:  # the relay drains while the lease is still held, then it is released
            await asyncio.get_running_loop().run_in_executor(None, self.bridge.stop)
        if self.remote_wake is not None:
            self.remote_wake.close()
        await self.stop_broker()
        self.parts.engine.dispose()
