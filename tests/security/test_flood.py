"""Volume: half-open TCP connections, and 2,000 bad-token CONNECTs within a minute, while valid
clients keep receiving everything. Every loop here is bounded in count and in time."""

from __future__ import annotations

import collections
import socket
import threading
import time
from typing import Any

import jwt

from broker.stats import AUTH_FAILURES, DISCONNECTS
from scripts import raw_mqtt as raw
from tests.security.checks import (  # noqa: F401  (broker_log is an autouse fixture)
    ACCEPTED,
    NOT_AUTHORIZED,
    assert_counted,
    assert_logged,
    assert_still_serves,
    broker_log,
    count,
    logged,
)
from tests.support import Subscriber, wait_for

HALF_OPEN = 200
ATTEMPTS = 2_000
ATTACK_THREADS = 4
ATTACK_BUDGET_SECONDS = 55.0  # "within a minute", with room for setup
PUBLISH_EVERY = 0.05


def live_subscriber(broker: Any, client_id: str) -> Subscriber:
    sub = Subscriber(broker.port, client_id, broker.token(client_id, "admin"))
    assert sub.connect() == ACCEPTED
    assert sub.subscribe("restaurant/7/orders") == 1
    return sub


class Heartbeat:
    """The bus publishing a numbered message every 50 ms (QoS 1) from a real paho client, until stopped."""

    def __init__(self, broker: Any, limit: int) -> None:
        self.bus = Subscriber(broker.port, "relay", broker.token("relay", "service", rid=None))
        assert self.bus.connect() == ACCEPTED
        self.limit = limit
        self.sent: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set() and len(self.sent) < self.limit:
            n = len(self.sent)
            self.bus.client.publish("restaurant/7/orders", str(n).encode(), qos=1)
            self.sent.append(n)
            due += PUBLISH_EVERY
            self._stop.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.bus.close()


def assert_received_all(sub: Subscriber, sent: list[int]) -> None:
    got = sub.collect(len(sent), timeout=20)
    numbers = [int(m.payload) for m in got]
    assert sorted(numbers) == sent, f"missing {sorted(set(sent) - set(numbers))[:20]}"
    assert sub.drain(quiet=0.3) == []  # and nothing twice


def test_half_open_connections_are_dropped_while_valid_clients_keep_working(make_broker, caplog):
    broker = make_broker(connect_timeout_seconds=1.0)
    sub = live_subscriber(broker, "dash")
    half_connect = raw.connect("slow", broker.token("slow", "admin"))[:20]
    before = count(DISCONNECTS, reason="connect_timeout")
    with Heartbeat(broker, limit=200) as heartbeat:
        opened = time.monotonic()
        idle = []
        for i in range(HALF_OPEN):
            sock = socket.create_connection(("127.0.0.1", broker.port), timeout=5)
            if i % 2:
                sock.sendall(half_connect)  # half a CONNECT, then nothing
            idle.append(sock)
        deadline = opened + 6.0  # 1 s timeout, a 0.25 s sweep, and slack for 2 busy cores
        for sock in idle:
            assert raw.closed_by_peer(sock, within=max(0.05, deadline - time.monotonic()))
            sock.close()
        closed_after = time.monotonic() - opened
        time.sleep(0.5)  # the heartbeat keeps going after the sweep
    assert closed_after < 6.0
    assert_counted(DISCONNECTS, before, by=HALF_OPEN, reason="connect_timeout")
    assert_logged(caplog, "disconnect client_id=None reason=connect_timeout", times=HALF_OPEN)
    assert len(heartbeat.sent) >= 20
    assert_received_all(sub, heartbeat.sent)
    sub.close()
    assert_still_serves(broker)


def test_connected_clients_that_go_silent_are_dropped_at_keepalive(broker, caplog):
    """Half-open after CONNECT (a device whose Wi-Fi dropped): 50 go silent with keepalive 1 s."""
    silent = []
    before = count(DISCONNECTS, reason="keepalive_timeout")
    for i in range(50):
        sock = raw.open_socket(broker.port)
        sock.sendall(raw.connect(f"gone-{i}", broker.token(f"gone-{i}", "admin"), keepalive=1))
        assert raw.connack_code(sock) == ACCEPTED
        silent.append(sock)
    deadline = time.monotonic() + 5.0
    for sock in silent:
        assert raw.closed_by_peer(sock, within=max(0.05, deadline - time.monotonic()))
    assert_counted(DISCONNECTS, before, by=50, reason="keepalive_timeout")
    assert_logged(caplog, "reason=keepalive_timeout", times=50)
    assert_still_serves(broker)


def bad_tokens(broker: Any) -> list[tuple[str | None, str]]:
    """(token, the reason it is refused for): a mix, as a scan or a broken fleet would send."""
    now = int(time.time())
    stale = {"sub": "x", "rid": 7, "role": "admin", "iat": now - 900, "exp": now - 300, "jti": "j", "aud": "mqtt"}
    return [
        (jwt.encode({**stale, "exp": now + 600}, b"a-guessed-key-that-is-not-ours-0123", "HS256"), "bad_signature"),
        (jwt.encode(stale, broker.tokens.key, "HS256"), "expired"),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "malformed"),
        (None, "no_token"),
        (broker.tokens.issue(sub="x", role="admin", rid=7, audience="api", ttl_seconds=600), "wrong_audience"),
    ]


def test_a_flood_of_bad_tokens_is_refused_while_valid_clients_keep_working(broker, caplog):
    tokens = bad_tokens(broker)
    reasons = sorted({reason for _, reason in tokens})
    before = {reason: count(AUTH_FAILURES, reason=reason) for reason in reasons}
    expected = collections.Counter(tokens[k % len(tokens)][1] for k in range(ATTEMPTS))
    sub = live_subscriber(broker, "dash")
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    started = time.monotonic()
    give_up = started + ATTACK_BUDGET_SECONDS

    def attack(worker: int) -> None:
        for k in range(worker, ATTEMPTS, ATTACK_THREADS):
            if time.monotonic() > give_up:
                with lock:
                    outcomes["not attempted in time"] += 1
                continue
            token, _ = tokens[k % len(tokens)]
            try:
                with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
                    sock.settimeout(10)
                    sock.sendall(raw.connect(f"intruder-{k}", token, username=f"intruder-{k}"))
                    code = raw.connack_code(sock)
                    outcome = "refused" if code == NOT_AUTHORIZED else "closed" if code is None else f"CONNACK {code}"
            except ConnectionResetError:
                outcome = "closed"
            except OSError as exc:  # a timeout: neither refused nor closed
                outcome = f"hung: {exc!r}"
            with lock:
                outcomes[outcome] += 1

    with Heartbeat(broker, limit=int(ATTACK_BUDGET_SECONDS / PUBLISH_EVERY) + 100) as heartbeat:
        time.sleep(0.5)
        attackers = [threading.Thread(target=attack, args=(w,), daemon=True) for w in range(ATTACK_THREADS)]
        for thread in attackers:
            thread.start()
        for thread in attackers:
            thread.join(timeout=max(1.0, give_up + 10 - time.monotonic()))
        elapsed = time.monotonic() - started
        assert not any(thread.is_alive() for thread in attackers), "attack threads did not finish"
        time.sleep(0.5)
    print(f"{ATTEMPTS} bad CONNECTs in {elapsed:.1f}s; {len(heartbeat.sent)} heartbeat messages; {dict(outcomes)}")

    assert elapsed < 60
    assert set(outcomes) <= {"refused", "closed"}, dict(outcomes)
    assert sum(outcomes.values()) == ATTEMPTS
    assert_received_all(sub, heartbeat.sent)  # every message published during the flood arrived
    for reason in reasons:
        assert_counted(AUTH_FAILURES, before[reason], by=expected[reason], reason=reason)
    assert sum(count(AUTH_FAILURES, reason=r) - before[r] for r in reasons) == ATTEMPTS
    wait_for(lambda: logged(caplog, "connect refused client_id='intruder-") == ATTEMPTS, timeout=10)
    for reason in reasons:
        assert logged(caplog, "connect refused client_id='intruder-", f"reason={reason}") == expected[reason]
    sub.close()
    assert_still_serves(broker)
