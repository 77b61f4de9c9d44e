"""The reconnect storm on the NATS cluster (issue 13, `python scripts/bench_fleet.py --storm`).

The fleet of bench_fleet.py, shaped as `orderbus simulate` shapes it (per restaurant 5 printers and 5
tablets on persistent sessions, 36 scales and 3 dashboards on clean ones; every subscription QoS 1, as
devices/fleet.py subscribes), connects to a three-node cluster through our auth callout, client i on
node i mod 3, with the tokens the bus would issue (printer: its station; every device: its own commands
topic). Then node `--kill` gets kill -9 and a service client on a surviving node publishes one ticket per
printer station at once (QoS 1). Measured from the kill: when every client is connected and subscribed
again (SUBACK), when the first ticket arrives, when every persistent subscriber has every ticket; and
per persistent subscriber, lost and duplicated tickets (a DUP redelivery of a ticket already received
counts as a duplicate). A second round of tickets after the storm checks the sessions still work.

The clients are asyncio raw MQTT 3.1.1 connections (scripts/raw_mqtt.py's packets), not paho: 2,450 of
them fit one Python process. Dashboards use TCP here, not WebSocket. A client that loses its node
reconnects to the next node after a random pause in [0, --jitter] s (devices/fleet.py waits 1 s and
doubles; the jitter spreads the storm), and retries every failure the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from core import topics
from devices.fleet_setup import stations_for
from scripts import raw_mqtt as raw

SETTLE_TARGET_S = 60.0
LAST_PUBACK: dict[str, float] = {}  # marker -> when its publisher had every PUBACK (monotonic)


@dataclass
class Device:
    client_id: str
    token: str
    kind: str
    rid: int
    filters: list[str]
    persistent: bool
    node: int  # the node it uses first; after a failure, the next one
    subscribed_at: float | None = None
    connected_to: int | None = None  # the node of its current connection (it moves on after a failure)
    connects: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    tickets: Counter[str] = field(default_factory=Counter)  # payload marker -> times received


async def _read(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, multiplier = 0, 1
    while True:
        byte = (await reader.readexactly(1))[0]
        length += (byte & 0x7F) * multiplier
        if not byte & 0x80:
            break
        multiplier *= 128
    return first, await reader.readexactly(length)


class Storm:
    def __init__(self, nats: Any, restaurants: int, jitter: float, clean_qos: int = 1) -> None:
        self.nats = nats
        self.clean_qos = clean_qos
        self.jitter = jitter
        self.devices: list[Device] = []
        self.stations = stations_for(5)
        index = 0
        for rid in range(1, restaurants + 1):
            shape = [("printer", 5, True), ("tablet", 5, True), ("scale", 36, False), ("dashboard", 3, False)]
            for kind, count, persistent in shape:
                for n in range(count):
                    self.devices.append(self._device(kind, n, rid, persistent, index))
                    index += 1

    def _device(self, kind: str, n: int, rid: int, persistent: bool, index: int) -> Device:
        client_id = f"storm-r{rid}-{kind}{n}"
        extra = {"station": self.stations[n]} if kind == "printer" else None
        role = "admin" if kind == "dashboard" else kind
        token = self.nats.tokens.issue(
            sub=client_id, role=role, rid=rid, audience="mqtt", ttl_seconds=4 * 3600, extra=extra
        )
        commands = [topics.device(rid, client_id, "commands")] if kind != "dashboard" else []
        wanted = {
            "printer": lambda: [topics.tickets(rid, self.stations[n])],
            "tablet": lambda: [topics.all_tickets(rid)],
            "scale": lambda: [],
            "dashboard": lambda: [topics.orders(rid)],
        }[kind]()
        return Device(client_id, token, kind, rid, [*wanted, *commands], persistent, index % len(self.nats.nodes))

    async def run_device(self, device: Device, stop: asyncio.Event) -> None:
        node = device.node
        while not stop.is_set():
            port = self.nats.nodes[node].ports.mqtt
            writer = None
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                writer.write(raw.connect(device.client_id, device.token, keepalive=0, clean=not device.persistent))
                first, body = await asyncio.wait_for(_read(reader), 60)
                if first >> 4 != 2 or body[1] != 0:
                    raise ConnectionError(f"connack {body[1] if len(body) > 1 else '?'}")
                device.connects += 1
                device.connected_to = node
                qos = 1 if device.persistent else self.clean_qos
                writer.write(raw.subscribe_filters([(f, qos) for f in device.filters], packet_id=1))
                while True:
                    first, body = await asyncio.wait_for(_read(reader), 90)
                    if first >> 4 == 9:
                        if any(code >= 0x80 for code in body[2:]):
                            raise ConnectionError("suback refused")
                        device.subscribed_at = time.monotonic()
                        break
                    self._on_publish(device, first, body, writer)
                while True:
                    first, body = await _read(reader)
                    self._on_publish(device, first, body, writer)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
                device.failures[type(exc).__name__ if not isinstance(exc, ConnectionError) else str(exc)] += 1
                device.subscribed_at = None
                if writer is not None:
                    writer.close()
                node = (node + 1) % len(self.nats.nodes)
                while not self.nats.nodes[node].running:
                    node = (node + 1) % len(self.nats.nodes)
                await asyncio.sleep(random.uniform(0, self.jitter))

    def _on_publish(self, device: Device, first: int, body: bytes, writer: asyncio.StreamWriter) -> None:
        if first >> 4 != 3:
            return
        qos = (first >> 1) & 3
        (length,) = struct.unpack("!H", body[:2])
        offset = 2 + length
        if qos:
            (packet_id,) = struct.unpack("!H", body[offset : offset + 2])
            writer.write(raw.puback(packet_id))
            offset += 2
        payload = body[offset:].decode(errors="replace")
        if payload.startswith("ticket "):
            device.tickets[payload] += 1


async def publish_tickets(
    nats: Any, node: int, rids: list[int], stations: list[str], marker: str, timeout: float = 300
) -> list[str]:
    """One QoS 1 ticket per (restaurant, station) from a service client; returns the payloads sent, once all
    are PUBACKed. As the relay does, a publish whose PUBACK did not come before the connection dropped is
    sent again on a new connection (so a subscriber may see it twice: counted as duplicated)."""
    pending = {f"ticket {marker} r{r} {s}": topics.tickets(r, s) for r in rids for s in stations}
    sent = list(pending)
    deadline = time.monotonic() + timeout
    attempt = 0
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"publisher ({marker}): {len(pending)} tickets without PUBACK after {timeout:.0f} s")
        attempt += 1
        client_id = f"storm-service-{marker}-{attempt}"  # a new id: no takeover of a half-made session
        user, password = nats.login(client_id, "service")
        writer = None
        try:
            opened = asyncio.open_connection("127.0.0.1", nats.nodes[node].ports.mqtt)
            reader, writer = await asyncio.wait_for(opened, 10)
            writer.write(raw.connect(client_id, password, keepalive=0, username=user))
            first, body = await asyncio.wait_for(_read(reader), 60)
            if first >> 4 != 2 or body[1] != 0:
                raise ConnectionError(f"service client refused: CONNACK {body[1]}")
            ids = {}
            for packet_id, (payload, topic) in enumerate(pending.items(), start=1):
                writer.write(raw.publish(topic, payload.encode(), qos=1, packet_id=packet_id))
                ids[packet_id] = payload
            print(f"  publisher ({marker}): attempt {attempt} connected, {len(pending)} sent", flush=True)
            while pending:
                first, body = await asyncio.wait_for(_read(reader), 60)
                if first >> 4 == 4:
                    pending.pop(ids[struct.unpack("!H", body[:2])[0]], None)
            LAST_PUBACK[marker] = time.monotonic()
            writer.write(raw.DISCONNECT)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
            print(f"  publisher ({marker}): {type(exc).__name__} {exc}; {len(pending)} unacked, again", flush=True)
            await asyncio.sleep(0.5)
        finally:
            if writer is not None:
                writer.close()
    return sent


def expected(storm: Storm, device: Device, sent: list[str]) -> set[str]:
    if device.kind == "printer":
        station = storm.stations[int(device.client_id.rsplit("printer", 1)[1])]
        return {p for p in sent if p.endswith(f" r{device.rid} {station}")}
    return {p for p in sent if f" r{device.rid} " in p}


def tally(storm: Storm, sent: list[str]) -> tuple[int, int, int]:
    """(deliveries expected, lost, duplicated) over the persistent subscribers."""
    wanted = lost = duplicated = 0
    for device in (d for d in storm.devices if d.persistent):
        want = expected(storm, device, sent)
        wanted += len(want)
        lost += sum(1 for p in want if device.tickets[p] == 0)
        duplicated += sum(device.tickets[p] - 1 for p in want if device.tickets[p] > 1)
    return wanted, lost, duplicated


def log_summary(nats: Any, top: int = 8) -> list[str]:
    """The nodes' most frequent warning and error lines (numbers masked), to see what the storm hit."""
    import re

    seen: Counter[str] = Counter()
    for node in nats.nodes:
        for line in node.log.read_text(errors="replace").splitlines():
            if "[WRN]" in line or "[ERR]" in line:
                text = line.split("] ", 2)[-1] if "] " in line else line
                seen[re.sub(r"[0-9a-f]{6,}|\d+", "#", text)[:160]] += 1
    return [f"{count} x {text}" for text, count in seen.most_common(top)]


async def wait_until(condition: Any, timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until `condition()` held (from now), None if it did not within `timeout`."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if condition():
            return time.monotonic() - began
        await asyncio.sleep(interval)
    return None


async def run(
    nats: Any, restaurants: int, kill: int, jitter: float, timeout: float, clean_qos: int = 1
) -> dict[str, Any]:
    storm = Storm(nats, restaurants, jitter, clean_qos)
    stop = asyncio.Event()
    devices = storm.devices
    began = time.monotonic()
    tasks = [asyncio.create_task(storm.run_device(d, stop)) for d in devices]
    report: dict[str, Any] = {"clients": len(devices), "persistent": sum(d.persistent for d in devices)}
    try:
        up = await wait_until(lambda: all(d.subscribed_at for d in devices), timeout, 0.5)
        report["first_connect_s"] = up
        print(f"  {sum(bool(d.subscribed_at) for d in devices)}/{len(devices)} subscribed in {up} s", flush=True)
        if up is None:
            return report
        rids = list(range(1, restaurants + 1))
        survivor = (kill + 1) % len(nats.nodes)
        before = await publish_tickets(nats, survivor, rids, storm.stations, "before")
        report["before"] = await _deliveries(storm, before, timeout)
        report["before"].pop("done_at")
        # the clients connected to that node now: a client refused during the first connect moved on to
        # the next node, and one that never lost its connection has nothing to come back from
        on_killed = [d for d in devices if d.connected_to == kill]
        connects = {id(d): d.connects for d in devices}
        killed_at = time.monotonic()
        nats.kill(kill)
        print(f"  killed node {nats.nodes[kill].name} ({len(on_killed)} clients on it)", flush=True)
        sent_task = asyncio.create_task(publish_tickets(nats, survivor, rids, storm.stations, "storm", timeout))

        def first_ticket() -> bool:
            return any(p.startswith("ticket storm") for d in devices for p in d.tickets)

        def all_back() -> bool:
            return all(d.subscribed_at and d.connects > connects[id(d)] for d in on_killed) and all(
                d.subscribed_at for d in devices
            )

        first_task = asyncio.create_task(wait_until(first_ticket, timeout, 0.01))
        back_task = asyncio.create_task(wait_until(all_back, timeout, 0.1))
        first, back = await first_task, await back_task  # each: seconds from (just after) the kill
        report["first_ticket_s"] = first
        report["all_resubscribed_s"] = back
        if back is None:  # who kept the fleet from settling, and what last went wrong for them
            killed = {id(d) for d in on_killed}
            stuck = [d for d in devices if not d.subscribed_at or (id(d) in killed and d.connects <= connects[id(d)])]
            report["not_back"] = {
                "by_kind": dict(Counter(d.kind for d in stuck)),
                "never_reconnected": sum(1 for d in stuck if d.connects <= connects[id(d)]),
                "their_failures": dict(sum((d.failures for d in stuck), Counter()).most_common(4)),
            }
        print(f"  first ticket after {first} s, every client back after {back} s", flush=True)
        sent = await sent_task
        report["published_s"] = LAST_PUBACK["storm"] - killed_at
        print(f"  every ticket PUBACKed {report['published_s']:.1f} s after the kill", flush=True)
        report["storm"] = await _deliveries(storm, sent, timeout)
        delivered = report["storm"].pop("done_at")
        if report["storm"]["lost"] == 0 and back is not None:
            report["all_tickets_s"] = delivered - killed_at
            report["settled_s"] = max(back, delivered - killed_at)
        after = await publish_tickets(nats, survivor, rids, storm.stations, "after")
        report["after"] = await _deliveries(storm, after, timeout)
        report["after"].pop("done_at")
        report["reconnects_of_killed_clients"] = sum(d.connects - connects[id(d)] for d in on_killed)
        report["failures"] = dict(sum((d.failures for d in devices), Counter()).most_common(6))
        report["total_s"] = time.monotonic() - began
        report["node_log"] = log_summary(nats)
        return report
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)


async def _deliveries(storm: Storm, sent: list[str], timeout: float) -> dict[str, Any]:
    """Wait (up to `timeout`) until every persistent subscriber has each of `sent`, then count."""
    await wait_until(lambda: tally(storm, sent)[1] == 0, timeout, 0.05)
    done_at = time.monotonic()
    await asyncio.sleep(1.0)  # duplicates that arrive late still count
    wanted, lost, duplicated = tally(storm, sent)
    return {"tickets": len(sent), "deliveries": wanted, "lost": lost, "duplicated": duplicated, "done_at": done_at}
