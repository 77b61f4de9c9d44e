"""`orderbus simulate`: a fleet of simulated devices against a running bus, counting what arrives.

Printers (persistent sessions) print each ticket of their station and report `printed`; tablets
(persistent) receive every ticket and the first tablet of a site bumps each order to preparing;
scales publish readings; dashboards (clean sessions, WebSocket) follow the orders channel. Orders
are placed through the API at a steady rate. Every delivery is matched against what was placed:
delivered, lost and duplicated per device kind, and latency from the order's HTTP response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import httpx

from core import topics
from devices.fleet_setup import START_UNITS, UNIT_GRAMS, Site
from devices.link import utc_iso

log = logging.getLogger("orderbus.simulate")
OFFLINE_TIMEOUT = 5.0  # seconds a stopping device waits for the PUBACK of its `offline`


@dataclass
class Tally:
    """What one kind of device should get and what it got: keys are (device, order id, station)."""

    expected: set[tuple[str, int, str]] = field(default_factory=set)
    received: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return len(self.expected & set(self.received))

    @property
    def lost(self) -> int:
        return len(self.expected - set(self.received))

    @property
    def duplicated(self) -> int:
        return sum(count - 1 for count in self.received.values() if count > 1)

    @property
    def unexpected(self) -> int:
        return len(set(self.received) - self.expected)


@dataclass
class Endpoints:
    mqtt_host: str
    mqtt_port: int
    ws_port: int
    tls: ssl.SSLContext | None = None  # MQTT/TLS (and, for dashboards, secure WebSocket: give the wss port)


@dataclass
class FleetRun:
    """One simulation: the sites, what was placed, and the tallies the devices fill in."""

    sites: list[Site]
    endpoints: Endpoints
    readings_per_second: float = 100.0
    placed: dict[int, float] = field(default_factory=dict)  # order id → monotonic time of the 201
    order_errors: Counter[str] = field(default_factory=Counter)
    printed: Tally = field(default_factory=Tally)  # a printer printed the ticket
    tablets: Tally = field(default_factory=Tally)
    dashboards: Tally = field(default_factory=Tally)
    bumps: Counter[str] = field(default_factory=Counter)  # ack / error replies to tablet bumps
    readings_sent: int = 0
    device_errors: Counter[str] = field(default_factory=Counter)  # error replies on commands topics
    connect_failures: Counter[str] = field(default_factory=Counter)
    connected: Counter[str] = field(default_factory=Counter)
    loop_lag: list[float] = field(default_factory=list)  # how late the simulator's own timer fires

    async def watch_loop_lag(self, period: float = 0.1) -> None:
        """A saturated simulator delays its own receipts: its lag says how far to trust the latencies."""
        while True:
            due = time.monotonic() + period
            await asyncio.sleep(period)
            self.loop_lag.append(max(0.0, time.monotonic() - due))

    # --- devices ---------------------------------------------------------------------------

    async def printer(self, site: Site, device_id: str, token: str) -> None:
        station = site.printer_station[device_id]
        wanted = [topics.tickets(site.rid, station)]
        async for client, message in self._session("printer", device_id, token, site.rid, wanted, persistent=True):
            body = _json(message)
            if body is None or body.get("type") != "kitchen_ticket":
                self._reply(body, message)
                continue
            ticket = body["data"]["ticket"]
            self._arrived(self.printed, (device_id, ticket["order_id"], ticket["station"]), ticket["order_id"])
            report = {"type": "printed", "ticket_id": ticket["id"], "printer": "primary", "ts": utc_iso()}
            await client.publish(topics.device(site.rid, device_id, "events"), json.dumps(report), qos=1)

    async def tablet(self, site: Site, device_id: str, token: str, bumps: bool) -> None:
        wanted = [topics.all_tickets(site.rid)]
        bumped: set[int] = set()
        async for client, message in self._session("tablet", device_id, token, site.rid, wanted, persistent=True):
            body = _json(message)
            if body is None or body.get("type") != "kitchen_ticket":
                self._reply(body, message)
                continue
            ticket = body["data"]["ticket"]
            self._arrived(self.tablets, (device_id, ticket["order_id"], ticket["station"]), ticket["order_id"])
            if bumps and ticket["order_id"] not in bumped:
                bumped.add(ticket["order_id"])
                event = {
                    "type": "bumped",
                    "order_id": ticket["order_id"],
                    "to": "preparing",
                    "request_id": f"bump-{ticket['order_id']}",
                }
                await client.publish(topics.device(site.rid, device_id, "events"), json.dumps(event), qos=1)

    async def dashboard(self, site: Site, client_id: str, token: str) -> None:
        wanted = [topics.orders(site.rid)]
        async for _client, message in self._session("dashboard", client_id, token, site.rid, wanted, ws=True):
            body = _json(message)
            if body is not None and body.get("type") == "new_order":
                order_id = body["data"]["order"]["id"]
                self._arrived(self.dashboards, (client_id, order_id, "-"), order_id)

    async def scale(self, site: Site, device_id: str, token: str, item_id: int, period: float) -> None:
        """Readings at `period` seconds, a whole count plus a little noise; now and then one unit is taken."""
        units, seq, boot_id = START_UNITS, 0, uuid.uuid4().hex
        await asyncio.sleep(random.uniform(0, period))  # spread the fleet's readings over the period
        async for client, message in self._session("scale", device_id, token, site.rid, [], idle=period):
            if message is not None:
                self._reply(_json(message), message)
                continue
            if random.random() < 0.1 and units > 1:
                units -= 1
            seq += 1
            grams = round(units * UNIT_GRAMS + random.gauss(0, 4), 1)
            reading = {"item_id": item_id, "grams": grams, "seq": seq, "boot_id": boot_id, "ts": utc_iso()}
            await client.publish(topics.device(site.rid, device_id, "readings"), json.dumps(reading), qos=1)
            self.readings_sent += 1

    # --- orders ----------------------------------------------------------------------------

    async def place_orders(self, http: httpx.AsyncClient, per_minute: float, duration: float) -> None:
        """A steady schedule (not back-to-back): a slow API makes orders late, which the latencies show."""
        interval, start, tasks = 60.0 / per_minute, time.monotonic(), []
        limit = asyncio.Semaphore(32)
        n = 0
        while (due := start + n * interval) < start + duration:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(self._place(http, random.choice(self.sites), limit)))
            n += 1
        await asyncio.gather(*tasks)

    async def _place(self, http: httpx.AsyncClient, site: Site, limit: asyncio.Semaphore) -> None:
        stations = random.sample(site.stations, k=random.randint(1, min(3, len(site.stations))))
        lines = [{"menu_item_id": random.choice(site.dishes[s]), "quantity": random.randint(1, 3)} for s in stations]
        async with limit:
            try:
                response = await http.post(f"/restaurants/{site.rid}/orders", json={"items": lines, "table_name": "T1"})
            except httpx.HTTPError as exc:
                self.order_errors[type(exc).__name__] += 1
                return
        if response.status_code != 201:
            self.order_errors[str(response.status_code)] += 1
            return
        order_id = response.json()["id"]
        self.placed[order_id] = time.monotonic()
        for device_id, station in site.printer_station.items():
            if station in stations:
                self.printed.expected.add((device_id, order_id, station))
        for device_id in site.tablets:
            self.tablets.expected.update((device_id, order_id, station) for station in stations)
        for client_id in site.dashboards:
            self.dashboards.expected.add((client_id, order_id, "-"))

    # --- plumbing --------------------------------------------------------------------------

    def _arrived(self, tally: Tally, key: tuple[str, int, str], order_id: int) -> None:
        tally.received[key] += 1
        placed = self.placed.get(order_id)
        if placed is not None and tally.received[key] == 1:
            tally.latencies.append(max(0.0, time.monotonic() - placed))

    def _reply(self, body: dict[str, Any] | None, message: aiomqtt.Message) -> None:
        if body is None:
            self.device_errors["not_json"] += 1
        elif body.get("type") == "ack":
            self.bumps["ack"] += 1
        elif body.get("type") == "error":
            kind = "bump_error" if "/events" in str(body.get("topic")) and "tablet" in str(message.topic) else "error"
            self.device_errors[f"{kind}:{body.get('reason')}"] += 1

    async def _session(
        self,
        kind: str,
        client_id: str,
        token: str,
        rid: int,
        wanted: list[str],
        *,
        persistent: bool = False,
        ws: bool = False,
        idle: float | None = None,
    ):
        """Yield (client, message) for each message; with `idle`, also (client, None) every `idle` seconds.

        Reconnects with backoff; persistent sessions get what they missed meanwhile.
        """
        status = topics.device(rid, client_id, "status") if kind != "dashboard" else None
        boot_id = uuid.uuid4().hex
        will = None
        if status:
            will = aiomqtt.Will(status, json.dumps({"state": topics.LOST, "boot_id": boot_id, "kind": kind}), 1, True)
        delay = 1.0
        while True:
            try:
                async with aiomqtt.Client(
                    self.endpoints.mqtt_host,
                    self.endpoints.ws_port if ws else self.endpoints.mqtt_port,
                    identifier=client_id,
                    username=client_id,
                    password=token,
                    clean_session=not persistent,
                    keepalive=30,
                    will=will,
                    transport="websockets" if ws else "tcp",
                    websocket_path="/mqtt" if ws else None,
                    tls_context=self.endpoints.tls,
                    timeout=30,
                ) as client:
                    self.connected[kind] += 1
                    delay = 1.0
                    if status:
                        online = {"state": topics.ONLINE, "boot_id": boot_id, "kind": kind, "ts": utc_iso()}
                        await client.publish(status, json.dumps(online), qos=1, retain=True)
                    for topic_filter in [*wanted, *([topics.device(rid, client_id, "commands")] if status else [])]:
                        await client.subscribe(topic_filter, qos=1)
                    try:
                        async for item in _messages(client, idle):
                            yield client, item
                    except asyncio.CancelledError:
                        if status:  # a clean DISCONNECT sends no Last Will: say `offline` first, as devices.link does
                            await _say_offline(client, status, boot_id, kind)
                        raise
            except aiomqtt.MqttError as exc:
                self.connect_failures[kind] += 1
                pause = delay * random.uniform(0.5, 1.5)  # jitter: a dropped node's devices do not return in step
                log.debug("%s: %s; reconnecting in %.1f s", client_id, exc, pause)
                await asyncio.sleep(pause)
                delay = min(delay * 2, 10)


async def _say_offline(client: aiomqtt.Client, status: str, boot_id: str, kind: str) -> None:
    """Without this, a simulated device that stopped stayed `online` (its retained status) for good."""
    offline = {"state": topics.OFFLINE, "boot_id": boot_id, "kind": kind, "ts": utc_iso()}
    try:
        await asyncio.wait_for(client.publish(status, json.dumps(offline), qos=1, retain=True), OFFLINE_TIMEOUT)
    except (aiomqtt.MqttError, TimeoutError) as exc:
        log.debug("%s: offline status not sent: %s", status, exc)


async def _messages(client: aiomqtt.Client, idle: float | None):
    """The client's messages, with a None every `idle` seconds when given (a device's own clock)."""
    if idle is None:
        async for message in client.messages:
            yield message
        return
    iterator = client.messages.__aiter__()
    next_tick = time.monotonic() + idle
    pending: asyncio.Future | None = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=max(0.0, next_tick - time.monotonic()))
            if done:
                message, pending = pending.result(), None
                yield message
            else:
                next_tick += idle
                yield None
    finally:
        if pending is not None:
            pending.cancel()
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning


def _json(message: aiomqtt.Message) -> dict[str, Any] | None:
    try:
        body = json.loads(message.payload)
    except (TypeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None when there is nothing to rank."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(run: FleetRun) -> dict[str, Any]:
    def kind(tally: Tally) -> dict[str, Any]:
        return {
            "expected": len(tally.expected),
            "delivered": tally.delivered,
            "lost": tally.lost,
            "duplicated": tally.duplicated,
            "unexpected": tally.unexpected,
            **{f"p{q}_ms": _ms(percentile(tally.latencies, q)) for q in (50, 95, 99)},
            "max_ms": _ms(max(tally.latencies, default=None)),
        }

    return {
        "orders_placed": len(run.placed),
        "order_errors": dict(run.order_errors),
        "printed": kind(run.printed),
        "tablets": kind(run.tablets),
        "dashboards": kind(run.dashboards),
        "bumps": dict(run.bumps),
        "readings_sent": run.readings_sent,
        "device_errors": dict(run.device_errors),
        "connections": dict(run.connected),
        "connect_failures": dict(run.connect_failures),
        "simulator_loop_lag_ms": {
            "p50": _ms(percentile(run.loop_lag, 50)),
            "p95": _ms(percentile(run.loop_lag, 95)),
            "max": _ms(max(run.loop_lag, default=None)),
        },
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def per_kind(sites: list[Site]) -> dict[str, int]:
    counts: defaultdict[str, int] = defaultdict(int)
    for site in sites:
        counts["printers"] += len(site.printers)
        counts["tablets"] += len(site.tablets)
        counts["scales"] += len(site.scales)
        counts["dashboards"] += len(site.dashboards)
    return dict(counts)
