"""The KDS tablet's side of the bus, without a screen: board updates in, bump/recall requests out.

Requests go to the tablet's `events` topic with a fresh `request_id`; the bus answers on its
`commands` topic with an `ack` or an `error` carrying the same id (docs/devices.md). The MQTT
network thread writes the board and resolves replies; the screen reads the board under `lock`.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from core import topics
from devices.catchup import INTERVAL_SECONDS, CatchUp, DeviceApi, Snapshot
from devices.kds_board import Board
from devices.link import DeviceLink, Identity

log = logging.getLogger("orderbus.devices.kds")

Reply = dict[str, Any]


CATCHUP_TYPES = ("new_order", "order_updated", "kitchen_ticket")  # what the board reads


def subscriptions(restaurant_id: int) -> list[str]:
    """What a tablet reads; its own commands topic is added by DeviceLink."""
    return [topics.open_orders(restaurant_id), topics.orders(restaurant_id), topics.all_tickets(restaurant_id)]


@dataclass(frozen=True)
class Pending:
    action: str  # bumped | recalled
    order_id: int
    reply: Future[Reply]


class KdsClient:
    """One tablet's connection: a persistent session, so events missed while away still arrive."""

    def __init__(
        self,
        token: str,
        host: str,
        port: int,
        board: Board,
        *,
        keepalive: int = 30,
        tls: ssl.SSLContext | None = None,
        api_url: str | None = None,
        catchup_seconds: float = INTERVAL_SECONDS,
    ) -> None:
        self.identity = Identity.from_token(token)
        self.board = board
        self.lock = threading.Lock()
        self.on_change: Callable[[], object] = lambda: None  # the board changed (called on the MQTT thread)
        self.on_notice: Callable[[Reply], None] = lambda _reply: None  # a reply to no request of ours
        self._pending: dict[str, Pending] = {}
        self.link = DeviceLink(
            token,
            host,
            port,
            subscriptions=subscriptions(self.identity.restaurant_id),
            on_message=self._message,
            persistent=True,
            keepalive=keepalive,
            tls=tls,
            api_url=api_url,
            expected_role="tablet",
        )
        self._commands = self.identity.topic("commands")
        self._cursor: int | None = None  # in memory: a restarted screen starts from the snapshot
        self.catchup: CatchUp | None = None
        if api_url is not None:  # without it, MQTT only: retained state and live events
            self.catchup = CatchUp(
                DeviceApi(api_url, token),
                types=CATCHUP_TYPES,
                load=lambda: self._cursor,
                save=self._save_cursor,
                apply=self._caught_up,
                restart=self._restart,
                interval=catchup_seconds,
            )
            self.link.on_ready = self.catchup.trigger

    def start(self) -> None:
        self.link.start()
        if self.catchup is not None:
            self.catchup.start()

    def stop(self) -> None:
        if self.catchup is not None:
            self.catchup.stop()
        self.link.stop()

    def _save_cursor(self, seq: int) -> None:
        self._cursor = seq

    def _caught_up(self, envelope: dict[str, Any]) -> None:
        """An event read back by catch-up, applied as a live one is (the board dedupes by id and version)."""
        with self.lock:
            changed = self.board.apply_envelope(envelope)
        if changed:
            self.on_change()

    def _restart(self, snapshot: Snapshot) -> None:
        with self.lock:
            changed = self.board.restart(snapshot.open_orders, snapshot.seq)
        if changed:
            self.on_change()

    @property
    def connected(self) -> bool:
        return self.link.connected.is_set()

    def busy_orders(self) -> set[int]:
        with self.lock:
            return {pending.order_id for pending in self._pending.values()}

    def busy(self, order_id: int) -> bool:
        """A request for this order is still waiting for its reply: a second tap would race it."""
        with self.lock:
            return any(pending.order_id == order_id for pending in self._pending.values())

    def bump(self, order_id: int, to: str) -> tuple[str, Future[Reply]]:
        return self._request("bumped", order_id, {"to": to})

    def recall(self, order_id: int) -> tuple[str, Future[Reply]]:
        return self._request("recalled", order_id, {})

    def forget(self, request_id: str) -> None:
        """Give up waiting (a timeout); a reply that comes later is then only a notice."""
        with self.lock:
            self._pending.pop(request_id, None)

    def _request(self, action: str, order_id: int, fields: dict[str, Any]) -> tuple[str, Future[Reply]]:
        request_id = uuid.uuid4().hex
        reply: Future[Reply] = Future()
        with self.lock:
            self._pending[request_id] = Pending(action, order_id, reply)
        body = {"type": action, "order_id": order_id, **fields, "request_id": request_id}
        self.link.publish("events", body)  # QoS 1: paho keeps it across a reconnect
        return request_id, reply

    def _message(self, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._commands:
            self._reply(message.payload)
            return
        with self.lock:
            changed = self.board.receive(message.topic, message.payload)
        if changed:
            self.on_change()

    def _reply(self, payload: bytes | bytearray) -> None:
        try:
            reply = json.loads(payload)
        except ValueError:
            log.warning("kds: a command that is not JSON")
            return
        if not isinstance(reply, dict) or reply.get("type") not in ("ack", "error"):
            return  # commands for other devices' features (config, …): nothing for a KDS to do
        with self.lock:
            pending = self._pending.pop(str(reply.get("request_id")), None)
            if pending is not None:
                self._settle(pending, reply)
        if pending is None:
            self.on_notice(reply)
            return
        if not pending.reply.done():
            pending.reply.set_result(reply)
        self.on_change()

    def _settle(self, pending: Pending, reply: Reply) -> None:
        """The board follows the bus's answer at once (under the lock)."""
        board = self.board
        if reply["type"] == "ack":
            status, version = reply.get("status"), reply.get("version")
            if isinstance(status, str) and isinstance(version, int):
                board.apply_ack(pending.order_id, status, version)
            if pending.action == "bumped" and isinstance(status, str):
                board.bumped(pending.order_id, status)
            else:
                board.recalled(pending.order_id)
        elif pending.action == "recalled":
            board.recalled(pending.order_id)  # the bus will not take it back: do not offer it again
