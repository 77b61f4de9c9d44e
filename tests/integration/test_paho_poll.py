"""The bus's paho clients connect when the process holds more than 1,024 descriptors (bridge/paho_poll.py).

A real paho client against a minimal MQTT listener (it answers a CONNECT with CONNACK 0), with 1,100
descriptors held open first, so that the client's socket is numbered past select()'s ceiling. With
paho's own `select` it never connects; with `use_poll()` it does, and publishes at QoS 1.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
from collections.abc import Iterator

import paho.mqtt.client as paho_client
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bridge.paho_poll import PollSelect, use_poll

HELD = 1100


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    read, write = os.pipe()
    held = [os.dup(read) for _ in range(HELD)]
    try:
        yield
    finally:
        for fd in (*held, read, write):
            os.close(fd)


@pytest.fixture
def listener() -> Iterator[int]:
    """Answers each connection's CONNECT with CONNACK 0 and each QoS 1 PUBLISH with its PUBACK."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            while not stop.is_set() and (data := conn.recv(4096)):
                if data[0] >> 4 == 1:
                    conn.sendall(b"\x20\x02\x00\x00")
                elif data[0] >> 4 == 3 and data[0] & 0x06:
                    topic_length = int.from_bytes(data[2:4], "big")
                    conn.sendall(b"\x40\x02" + data[4 + topic_length : 6 + topic_length])

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def connects(port: int, wait: float) -> bool:
    client = paho_client.Client(CallbackAPIVersion.VERSION2, client_id="relay-test", protocol=paho_client.MQTTv311)
    answered: queue.Queue[int] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, rc, _p: answered.put(rc.value)
    client.connect_async("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        if answered.get(timeout=wait) != 0:
            return False
        sent = client.publish("a/b", b"x", qos=1)
        sent.wait_for_publish(timeout=wait)
        return sent.is_published()  # its PUBACK came back through the same loop
    except queue.Empty:
        return False
    finally:
        client.disconnect()
        client.loop_stop()


def test_past_1024_descriptors_paho_connects_only_with_poll(many_descriptors, listener, monkeypatch):
    monkeypatch.setattr(paho_client, "select", __import__("select"))  # paho as shipped
    assert not connects(listener, wait=3)  # select() refuses the socket's number: never connected
    use_poll()
    assert isinstance(paho_client.select, PollSelect)
    assert connects(listener, wait=10)


def test_poll_select_answers_like_select_for_a_closed_socket_and_a_ready_one():
    left, right = socket.socketpair()
    try:
        right.sendall(b"x")
        readable, writable, errors = PollSelect.select([left], [left], [], 1.0)
        assert (readable, writable, errors) == ([left], [left], [])
        assert PollSelect.select([right], [], [], 0.05) == ([], [], [])  # nothing to read: the timeout
    finally:
        left.close()
        right.close()
    with pytest.raises(ValueError):  # what paho catches from select() for a socket closed under it
        PollSelect.select([left], [], [], 0)
