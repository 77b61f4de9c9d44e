"""The chaos run's client processes: a dashboard-like subscriber and a headless KDS tablet.

Each runs as its own process so the run can freeze it (SIGSTOP) like a stalled tablet, and writes
what it saw as JSON lines, flushed per line, for `scripts/chaos.py` to count after the scenario.

The subscriber does what a dashboard does: a persistent QoS 1 session on `restaurant/{rid}/#`,
events applied strictly in seq order, and on every (re)connect or seq gap a catch-up from
`GET /events?after=<last applied seq>`. A renewed MQTT token is signed on every reconnect, so a
token that expires ends one connection, not the subscriber.

    python scripts/chaos_clients.py subscriber --rid 1 --port 1883 --api http://127.0.0.1:8000/api/v1 \
        --data-dir D --name sub-a --out sub-a.jsonl [--mqtt-ttl 600]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core import topics
from core.tokens import TokenService, load_or_create_key


class Log:
    """One JSON object per line, flushed at once: the parent reads it after a kill or a freeze."""

    def __init__(self, path: Path) -> None:
        self._out: TextIO = path.open("a", buffering=1)
        self._lock = threading.Lock()

    def write(self, kind: str, **fields: Any) -> None:
        with self._lock:
            self._out.write(json.dumps({"kind": kind, "t": time.time(), **fields}) + "\n")


def _order_id(envelope: dict[str, Any]) -> int | None:
    if envelope.get("type") != "new_order":
        return None
    order = envelope.get("data", {}).get("order", {})
    return order.get("id") if isinstance(order, dict) else None


class Subscriber:
    """Applies a restaurant's events in seq order, from MQTT and from catch-up, and logs each step.

    Log kinds: `connect`; `mqtt` (first MQTT copy of an event id); `apply` (with `via`: the copy that
    filled the seq); `dup_same` (the same id again on the same topic, QoS 1's right); `dup_new` (a seq
    already filled by another event id: a defect); `late` (an MQTT copy whose seq is below one already
    received: a subscriber without gap checks would apply it out of order); `catchup_error`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.log = Log(Path(args.out))
        self.tokens = TokenService(load_or_create_key(Path(args.data_dir)))
        self.api_token = self.tokens.issue(
            sub=args.name, role="staff", rid=args.rid, audience="api", ttl_seconds=24 * 3600
        )
        self.lock = threading.Lock()
        self.applied = 0  # every seq up to this one is applied
        self.by_seq: dict[int, str] = {}
        self.pending: dict[int, tuple[dict[str, Any], str]] = {}
        self.keys: set[tuple[str, str]] = set()  # (event id, topic or "catchup")
        self.mqtt_ids: set[str] = set()
        self.highest_mqtt = 0
        self.want_catchup = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=args.name, clean_session=False, protocol=mqtt.MQTTv311
        )
        self.client.reconnect_delay_set(1, 2)
        self._sign()
        self.client.on_connect = self._connected
        self.client.on_disconnect = lambda *_: self._sign()
        self.client.on_message = self._message

    def _sign(self) -> None:
        token = self.tokens.issue(
            sub=self.args.name, role="staff", rid=self.args.rid, audience="mqtt", ttl_seconds=self.args.mqtt_ttl
        )
        self.client.username_pw_set(self.args.name, token)
        self.log.write("signed", exp=time.time() + self.args.mqtt_ttl)

    def run(self) -> None:
        self.client.connect_async("127.0.0.1", self.args.port, keepalive=self.args.keepalive)
        self.client.loop_start()
        threading.Thread(target=self._catchup_loop, daemon=True).start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        stop.wait()
        self.client.loop_stop()

    def _connected(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            return
        client.subscribe(topics.everything(self.args.rid), qos=1)
        self.log.write("connect")
        self.want_catchup.set()

    def _message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain:
            return  # retained state repeats an event already counted on its channel
        try:
            envelope = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(envelope, dict) and isinstance(envelope.get("seq"), int) and "id" in envelope:
            self.receive(envelope, message.topic)

    def receive(self, envelope: dict[str, Any], topic: str) -> None:
        event_id, seq = str(envelope["id"]), int(envelope["seq"])
        via = "catchup" if topic == "catchup" else "mqtt"
        with self.lock:
            if (event_id, topic) in self.keys:
                self.log.write("dup_same", seq=seq, id=event_id)
                return
            self.keys.add((event_id, topic))
            if via == "mqtt" and event_id not in self.mqtt_ids:
                self.mqtt_ids.add(event_id)
                self.log.write("mqtt", seq=seq, id=event_id, order=_order_id(envelope))
                if seq < self.highest_mqtt:
                    self.log.write("late", seq=seq, id=event_id)
                self.highest_mqtt = max(self.highest_mqtt, seq)
            known = self.by_seq.get(seq)
            if known is None and seq in self.pending:
                known = str(self.pending[seq][0]["id"])
            if known is not None:
                if known != event_id:
                    self.log.write("dup_new", seq=seq, id=event_id, first=known)
                return
            if seq <= self.applied:
                self.log.write("dup_new", seq=seq, id=event_id, first=None)
                return
            self.pending[seq] = (envelope, via)
            while self.applied + 1 in self.pending:
                ready, how = self.pending.pop(self.applied + 1)
                self.applied += 1
                self.by_seq[self.applied] = str(ready["id"])
                self.log.write("apply", seq=self.applied, id=ready["id"], via=how, order=_order_id(ready))
            if self.pending:
                self.want_catchup.set()  # a gap: fetch it rather than wait

    def _catchup_loop(self) -> None:
        with httpx.Client(base_url=self.args.api, timeout=5.0) as http:
            while True:
                self.want_catchup.wait()
                self.want_catchup.clear()
                try:
                    self._catch_up(http)
                except (httpx.HTTPError, ValueError) as exc:
                    self.log.write("catchup_error", error=type(exc).__name__)
                    time.sleep(0.5)
                    self.want_catchup.set()

    def _catch_up(self, http: httpx.Client) -> None:
        while True:
            with self.lock:
                after = self.applied
            answer = http.get(
                f"/restaurants/{self.args.rid}/events",
                params={"after": after, "limit": 1000},
                headers={"authorization": f"Bearer {self.api_token}"},
            )
            answer.raise_for_status()
            envelopes = answer.json()
            for envelope in envelopes:
                self.receive(envelope, "catchup")
            if len(envelopes) < 1000:
                return


def run_kds(args: argparse.Namespace) -> None:
    """A headless tablet (the agent's client and board, no screen) that dumps its open orders twice a second."""
    from devices.kds_board import Board
    from devices.kds_client import KdsClient

    token = TokenService(load_or_create_key(Path(args.data_dir))).issue(
        sub=args.name, role="tablet", rid=args.rid, audience="mqtt", ttl_seconds=24 * 3600
    )
    client = KdsClient(token, "127.0.0.1", args.port, Board(), keepalive=args.keepalive)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client.start()
    out = Path(args.out)
    while not stop.wait(0.5):
        with client.lock:
            shown = sorted(client.board.cards)
        out.with_suffix(".tmp").write_text(json.dumps({"t": time.time(), "orders": shown}))
        out.with_suffix(".tmp").replace(out)
    client.stop()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["subscriber", "kds"])
    parser.add_argument("--rid", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api", default="")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mqtt-ttl", type=int, default=600)
    parser.add_argument("--keepalive", type=int, default=10)
    args = parser.parse_args(argv)
    if args.role == "subscriber":
        Subscriber(args).run()
    else:
        run_kds(args)


if __name__ == "__main__":
    main(sys.argv[1:])
