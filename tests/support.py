"""Test helpers: free ports, the REST app in-process, a running stack in a background loop,
MQTT clients that record what they get."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import json
import logging
import os
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import paho.mqtt.client as mqtt
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine
from sqlmodel import select

from api.main import create_app
from bridge.printer_events import expire_tickets
from broker.policy import Policy
from broker.store import journal_path
from cli.runtime import Parts, Runtime
from config.settings import Settings
from core.commands import CategoryIn, DeviceIn, DeviceKind, MenuIn, MenuItemIn
from core.db import make_engine, upgrade
from core.models import Category, Device, Menu, Restaurant, User, utcnow
from core.passwords import hash_password
from core.services import devices
from core.services import menu as menu_service
from core.tokens import TokenService
from core.unit_of_work import UnitOfWork
from scripts.ports import free_port

T = TypeVar("T")


def end_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Stop a loop that runs forever in `thread`, then close it.

    Closing is what gives back its epoll descriptor, its self-pipe's two sockets and its default executor's
    threads. Left open, every Stack and broker under test kept them, and a third of the way through a full
    run the process held over 1,024 descriptors: paho's `select()` cannot watch a socket numbered past
    1,023, so every later paho client (ours and the bus's own relay) connected and got no CONNACK."""
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    if not loop.is_running() and not loop.is_closed():
        loop.close()


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until `condition()` is truthy; fail loudly with the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@functools.cache
def _password_hash(password: str) -> str:
    """Argon2 takes half a second on purpose; a test's users may share one salted hash of the same password."""
    return hash_password(password)


class Site:
    """Data helpers over one database and one token service, shared by the in-process app and the full stack.

    Rows are written through the service layer or plain models in a unit of work of their own, the way
    an operator's tooling would, so a test sets up only what it is about and reads the rest through HTTP."""

    settings: Settings
    engine: Engine
    tokens: TokenService

    def http(self, token: str | None = None) -> httpx.Client:
        raise NotImplementedError

    def mqtt_token(self, sub: str, role: str, rid: int | None, **extra: Any) -> str:
        return self.tokens.issue(sub=sub, role=role, rid=rid, audience="mqtt", ttl_seconds=600, extra=extra)

    def api_token(self, sub: str, role: str, rid: int | None) -> str:
        return self.tokens.issue(sub=sub, role=role, rid=rid, audience="api", ttl_seconds=600)

    def add_restaurant(self, name: str, admin_email: str, password: str = "secret-pass") -> int:
        with UnitOfWork(self.engine) as uow:
            restaurant = Restaurant(name=name)
            uow.session.add(restaurant)
            uow.session.flush()
            uow.session.add(
                User(
                    restaurant_id=restaurant.id,
                    email=admin_email,
                    name=name + " admin",
                    role="admin",
                    password_hash=_password_hash(password),
                )
            )
            uow.commit()
            assert restaurant.id is not None
            return restaurant.id

    def add_device(self, rid: int, device_id: str, kind: DeviceKind, **fields: Any) -> str:
        """Register a device through the service layer; returns its broker token."""
        with UnitOfWork(self.engine) as uow:
            created = devices.create_device(
                uow, self.tokens, rid, DeviceIn(id=device_id, kind=kind, name=device_id, **fields)
            )
            uow.commit()
        return created.token

    def add_menu_item(self, rid: int, name: str, *, station: str | None = None, **fields: Any) -> int:
        """A menu item (in a category printing at `station`, when given) through the service layer."""
        with UnitOfWork(self.engine) as uow:
            menu = uow.session.exec(select(Menu).where(Menu.restaurant_id == rid)).first()
            menu_id = menu.id if menu else menu_service.create_row(uow, Menu, rid, MenuIn(name="Menu")).id
            assert menu_id is not None
            category_id = None
            if station is not None:
                category = menu_service.create_row(
                    uow, Category, rid, CategoryIn(name=station.title(), station=station)
                )
                category_id = category.id
            body = MenuItemIn(menu_id=menu_id, category_id=category_id, name=name, price_cents=500, **fields)
            item = menu_service.create_item(uow, rid, body)
            uow.commit()
            assert item.id is not None
            return item.id

    def device(self, device_id: str) -> Device:
        with UnitOfWork(self.engine) as uow:
            device = uow.session.get(Device, device_id)
            assert device is not None
            uow.session.expunge(device)  # readable after the unit of work ends
            return device


class App(Site):
    """The REST app in this process over a temporary SQLite file: no server, no broker, no relay.

    Requests go through the whole ASGI app (routing, validation, auth, the error mapping) by
    `TestClient`; what a request commits lands in the outbox table, where `/events` reads it."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.tokens = TokenService(secrets.token_hex(32).encode())
        policy = Policy.load(settings.acl_policy)
        self.app = create_app(
            settings, engine, self.tokens, device_grants=lambda claims: policy.grants(claims).may_receive
        )

    def http(self, token: str | None = None) -> TestClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return TestClient(self.app, base_url="http://testserver/api/v1", headers=headers)


def sqlite_engine(settings: Settings) -> Engine:
    """The engine `orderbus up` would make for these settings, with its schema."""
    fresh_database(settings)
    engine = make_engine(settings.db_url)
    if settings.database_url is not None:
        upgrade(engine)
    return engine


@functools.cache
def _head_schema() -> Path:
    """One SQLite file built by the migrations, once per run: copying it is faster than building
    the schema for every test (create_all or the revisions)."""
    directory = tempfile.mkdtemp(prefix="orderbus-schema-")
    atexit.register(shutil.rmtree, directory, True)
    path = Path(directory) / "orderbus.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection checkpoints the WAL into the file
    return path


def fresh_database(settings: Settings) -> None:
    """A data directory's database at the head revision, unless it has one already."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "orderbus.db"
    if settings.database_url is None and not path.exists():
        shutil.copyfile(_head_schema(), path)


class Stack(Site):
    """`orderbus up` in a background thread, so tests can stop and start its broker."""

    def __init__(self, data_dir: Path, **overrides: Any) -> None:
        ports = {"http_port": free_port(), "mqtt_port": free_port(), "ws_port": free_port()}
        self.settings = Settings(data_dir=data_dir, **(ports | overrides))  # on NATS: the cluster's ports
        fresh_database(self.settings)
        self.parts = Parts.build(self.settings)  # upgrades, as `orderbus up` does: here it finds the head
        self.engine, self.tokens = self.parts.engine, self.parts.tokens
        self.runtime = Runtime(self.parts)
        self.nats_cluster: Any = None  # on NATS: the cluster (tests/nats.py sets it)
        self.monitor_urls: list[str] = []  # on NATS: the nodes' monitoring endpoints (tests/nats.py sets them)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> Stack:
        self._thread.start()
        self.call(self.runtime.start())
        return self

    def stop(self) -> None:
        self.call(self.runtime.stop())
        end_loop(self.loop, self._thread)
        self.engine.dispose()  # its pooled connections: SQLite's file descriptors, PostgreSQL's sockets

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.http_port}"

    def http(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=f"{self.base_url}/api/v1", headers=headers, timeout=10)

    def set_ticket_clock(self, now: Callable[[], datetime]) -> None:
        """The bus's sweeper judges ticket deadlines by `now` from its next pass on."""
        rules = self.runtime.rules
        assert rules is not None
        index = next(i for i, sweep in enumerate(rules.sweeps) if sweep.__name__ == "expire_tickets")
        rules.sweeps[index] = expire_tickets(self.settings.ticket_ack_seconds, now)

    def forget_broker_state(self) -> None:
        """The broker's store is lost (a new disk, a file set aside): its next start begins with no
        sessions, no queues and no retained messages. Only while the broker is stopped."""
        assert self.runtime.broker is None, "stop the broker first"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{journal_path(self.settings.data_dir)}{suffix}").unlink(missing_ok=True)

    def stop_broker(self) -> None:
        """The bus's broker goes away: the embedded one stops; on NATS the node the bus connects to is
        killed (-9), its JetStream files kept, as a crashed machine would."""
        if self.nats_cluster is not None:
            self.nats_cluster.kill(0)
        else:
            self.call(self.runtime.stop_broker())

    def start_broker(self) -> float:
        """The broker is back: the embedded one starts on its store; on NATS the node restarts, rejoins and
        takes MQTT clients again. Returns the seconds it took."""
        began = time.monotonic()
        if self.nats_cluster is not None:
            self.nats_cluster.restart(0)
            self._takes_mqtt()
        else:
            self.call(self.runtime.start_broker())
        return time.monotonic() - began

    def _takes_mqtt(self, timeout: float = 75) -> None:
        """On NATS: wait until the restarted node accepts MQTT clients again.

        A node whose first MQTT client (the relay, reconnecting every 1-4 s) arrives before its JetStream
        has reached the meta leader sends a JetStream API request that is never answered, and holds every
        MQTT CONNECT of the account until that request times out (`js_api_timeout`, 30 s:
        broker/nats/conf.py); then the next CONNECT succeeds. Seen on nearly every restart (node logs:
        "Readloop processing time: 15 s", "lookup sessions stream … server is not running"). A test that
        waited less than that after a restart failed in CI ("condition not met within 20s")."""

        def accepted() -> bool:
            name = f"probe-{time.monotonic_ns()}"
            probe = Subscriber(self.settings.mqtt_port, name, self.mqtt_token(name, "service", None))
            try:
                return probe.connect() == 0
            except queue.Empty:  # no CONNACK within its wait: the node is still holding CONNECTs
                return False
            finally:
                probe.close()

        wait_for(accepted, timeout=timeout, interval=0.5)

    @property
    def on_nats(self) -> bool:
        """The bus runs on a NATS cluster (`broker_url`), not on the embedded broker."""
        return self.settings.broker_url is not None

    def subscribed(self, topic_filter: str, client_id: str) -> bool:
        """The broker holds this client's subscription: a message published now reaches it (or its queue)."""
        if self.on_nats:
            return nats_subscribed(self.monitor_urls, topic_filter, client_id)
        broker = self.runtime.broker
        assert broker is not None
        return any(session.client_id == client_id for session, _ in broker._subscriptions.get(topic_filter, []))


def nats_subscribed(monitor_urls: list[str], topic_filter: str, client_id: str) -> bool:
    """On NATS: the MQTT client `client_id` holds a QoS 1 subscription to `topic_filter` that delivers.

    NATS answers SUBSCRIBE once the plain subscription exists, and its connz lists the subject from
    then on; a QoS 1 subscription only receives once its JetStream consumer on `$MQTT_msgs` has a
    leader and delivers to one of the client's `$MQTT.sub.*` subjects. A message published between
    the two is stored but never delivered to it (the consumer starts with what comes next).
    """
    from broker.nats.subjects import filter_to_subjects

    wanted = set(filter_to_subjects(topic_filter))
    listed: set[str] = set()
    for url in monitor_urls:
        try:
            connz = httpx.get(f"{url}/connz", params={"subs": "1", "mqtt_client": client_id}, timeout=2).json()
        except (httpx.HTTPError, ValueError):
            continue
        for connection in connz.get("connections") or []:
            listed |= set(connection.get("subscriptions_list") or [])
    if not wanted & listed:
        return False
    streams = {f"$MQTT.msgs.{subject}" for subject in wanted}
    for url in monitor_urls:
        try:
            params = {"accounts": "1", "consumers": "1", "config": "1"}
            jsz = httpx.get(f"{url}/jsz", params=params, timeout=2).json()
        except (httpx.HTTPError, ValueError):
            continue
        for account in jsz.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                for consumer in stream.get("consumer_detail") or []:
                    config = consumer.get("config") or {}
                    cluster = consumer.get("cluster")  # absent on a server outside a cluster
                    if (
                        config.get("filter_subject") in streams
                        and config.get("deliver_subject") in listed
                        and (cluster is None or cluster.get("leader"))
                    ):
                        return True
    return False


@dataclass
class ShiftedClock:
    """The wall clock moved `ahead` seconds: a test lets the bus's time pass without waiting for it."""

    ahead: float = 0.0

    def __call__(self) -> datetime:
        return utcnow() + timedelta(seconds=self.ahead)


def add_burger_and_fries(
    admin: httpx.Client, rid: int, *, stock: int, low_stock: int, category_id: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Through the REST API: a menu with a stock-tracked Burger (in `category_id`) and untracked Fries."""
    menu = admin.post(f"/restaurants/{rid}/menus", json={"name": "Dinner"}).json()
    burger = admin.post(
        f"/restaurants/{rid}/menu-items",
        json={
            "menu_id": menu["id"],
            "category_id": category_id,
            "name": "Burger",
            "price_cents": 1200,
            "enable_stock_tracking": True,
            "stock_quantity": stock,
            "low_stock_threshold": low_stock,
        },
    )
    fries = admin.post(
        f"/restaurants/{rid}/menu-items", json={"menu_id": menu["id"], "name": "Fries", "price_cents": 400}
    )
    assert burger.status_code == fries.status_code == 201, (burger.text, fries.text)
    return burger.json(), fries.json()


@dataclass
class Received:
    topic: str
    payload: bytes | bytearray
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Subscriber:
    """A real paho client that records every message it receives."""

    port: int
    client_id: str
    token: str
    clean_session: bool = True
    transport: Literal["tcp", "websockets"] = "tcp"  # "websockets": path /mqtt
    ca_certs: Path | None = None  # set: TLS, verifying the broker against this certificate
    messages: queue.Queue[Received] = field(default_factory=queue.Queue)
    connack: queue.Queue[int] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[int]] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=self.clean_session,
            protocol=mqtt.MQTTv311,
            transport=self.transport,
        )
        if self.transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        if self.ca_certs is not None:
            self.client.tls_set(ca_certs=str(self.ca_certs))
        self.client.username_pw_set(self.client_id, self.token)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_message = lambda _c, _u, m: self.messages.put(Received(m.topic, m.payload, m.retain))
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc.value)
        self.client.on_subscribe = lambda _c, _u, _mid, codes, _p: self.subacks.put([c.value for c in codes])

    def connect(self) -> int:
        """Connect and return the CONNACK code (0 = accepted; paho reports refusals as MQTT 5 codes)."""
        self.client.connect_async("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        code = self.connack.get(timeout=10)
        if code != 0:
            self.close()  # no reconnect attempts after a refusal
        return code

    def subscribe(self, topic_filter: str, qos: int = 1) -> int:
        """Subscribe and return the SUBACK code (0x80 = refused)."""
        self.client.subscribe(topic_filter, qos=qos)
        return self.subacks.get(timeout=10)[0]

    def collect(self, count: int, timeout: float = 10.0) -> list[Received]:
        got: list[Received] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"expected {count} messages, got {len(got)}: {sorted({m.topic for m in got})}")
            try:
                got.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                continue
        return got

    def drain(self, quiet: float = 0.3) -> list[Received]:
        """Everything that arrives until nothing has come for `quiet` seconds."""
        got = []
        while True:
            try:
                got.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")


class TokenScan(logging.Handler):
    """Reads every log record it is given: a token in any of them is a leak."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("orderbus.test"):
            return  # tests that hand tokens to the redaction filter on purpose
        try:
            text = record.getMessage()
        except (TypeError, ValueError):
            text = str(record.msg)
        if _JWT.search(text):
            self.leaks.append(f"{record.name}: {text[:300]}")


class Wakes:
    """A relay wake callback that counts its calls and can be waited on."""

    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    def wait(self, timeout: float = 1.0) -> bool:
        woken = self.event.wait(timeout)
        self.event.clear()
        return woken


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on a thread of its own. The session's Chromium (Playwright's sync API) keeps an
    event loop running on the main thread once a browser test has started it, and `asyncio.run` refuses
    to start a second loop there: a test that passes alone would fail after the browser tests."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


ORDERBUS = str(Path(sys.executable).parent / "orderbus")  # the venv's command, whatever PATH says


@dataclass
class Proc:
    """One `orderbus …` process; its stdout and stderr (log lines included) in a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[str] = field(init=False)

    def start(self) -> Proc:
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "orderbus"), *self.argv],
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, **self.env},
            )
        wait_for(lambda: "Ctrl-C to stop" in self.output() or self.process.poll() is not None, timeout=90)
        assert self.process.poll() is None, self.output()
        return self

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if hasattr(self, "process") and self.process.poll() is None:
            self.process.send_signal(sig)
        if hasattr(self, "process"):
            self.process.wait(timeout=30)
