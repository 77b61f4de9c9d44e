"""On NATS the relay learns what the cluster holds retained from the `$MQTT_rmsgs` stream (bridge/nats_retained.py):
the layout nats-server 2.15.1 writes is read back as MQTT topics and payloads, a clear is no held state, and a
message no node can decode is counted, logged and skipped, never a crash. A login the cluster refuses is a
`StreamUnreadable` (the rebuild then reads over MQTT).

Real nats-server 2.15.1 (one node, the development user: it may write into the stream, as no bus login
may), real paho publishers, nats-py for the bad input. The reader's own login through the auth callout's
accounts is exercised by test_retained_rebuild.py on the nats-postgres stack."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from bridge.nats_retained import UNREADABLE, StreamReader, StreamUnreadable, payload_of, stream_subject, topic_of
from bridge.retained import STATE_FILTERS, STATUS_FILTER
from broker.nats.cluster import Cluster
from broker.nats.layout import DEV_USER
from scripts.ports import free_port
from tests.nats import client, running_cluster
from tests.support import run_async, wait_for

FILTERS = (*STATE_FILTERS, STATUS_FILTER)
_rids = itertools.count(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("nats"), nodes=1) as started:
        yield started


def reader(cluster: Cluster, password: str | None = None) -> StreamReader:
    return StreamReader([cluster.nodes[0].nats_url], DEV_USER, password or cluster.password, timeout=2.0)


def read_held(stream: StreamReader) -> dict[str, bytes]:
    """`StreamReader.held` on a thread of its own, as the relay calls it (it runs its own event loop, which
    the main thread cannot once the session's browser tests have left theirs running: tests.support.run_async)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(stream.held, FILTERS).result()


def retain(cluster: Cluster, messages: dict[str, bytes]) -> None:
    """Retained QoS 1 publishes through the node's MQTT gateway, each acknowledged (so stored)."""
    publisher = client(cluster, 0, f"publisher-{next(_rids)}")
    assert publisher.connect() == 0
    try:
        for topic, payload in messages.items():
            publisher.client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        publisher.close()


def under(held: dict[str, bytes], rid: int) -> dict[str, bytes]:
    return {topic: payload for topic, payload in held.items() if topic.startswith(f"restaurant/{rid}/")}


def test_the_retained_messages_the_gateway_stored_are_read_back_by_topic_and_a_clear_is_none(cluster: Cluster):
    rid = next(_rids) * 1000
    opened, closed = f"restaurant/{rid}/orders/open/1", f"restaurant/{rid}/orders/open/2"
    stock, status = f"restaurant/{rid}/inventory/items/7", f"restaurant/{rid}/devices/printer-1/status"
    retain(cluster, {opened: b'{"seq":1}', closed: b'{"seq":2}', stock: b'{"seq":3}', status: b'{"state":"lost"}'})
    retain(cluster, {closed: b"", f"restaurant/{rid}/orders": b"not a state topic"})  # [MQTT-3.3.1-10]

    held = wait_for(lambda: (h := under(read_held(reader(cluster)), rid)) and closed not in h and h)
    assert held == {opened: b'{"seq":1}', stock: b'{"seq":3}', status: b'{"state":"lost"}'}


def test_a_message_in_the_stream_no_node_can_decode_is_counted_logged_and_skipped(cluster: Cluster, caplog):
    rid = next(_rids) * 1000
    good = f"restaurant/{rid}/orders/open/1"
    retain(cluster, {good: b'{"seq":1}'})

    async def write_bad() -> None:
        import nats

        nc = await nats.connect(cluster.nodes[0].nats_url, user=DEV_USER, password=cluster.password)
        js = nc.jetstream()
        subject = f"$MQTT.rmsgs.restaurant.{rid}.orders.open"
        await js.publish(f"{subject}.2", b"{}", headers={"Nmqtt-RFlags": "zz"})  # flags not hex
        await js.publish(f"{subject}.3", b"{}", headers={"Nmqtt-RFlags": "7"})  # QoS 3: no such QoS
        await js.publish(f"{subject}.4", b"garbage, no headers, not JSON")
        await nc.close()

    run_async(write_bad())
    before = UNREADABLE._value.get()
    with caplog.at_level(logging.WARNING, logger="orderbus.relay"):
        held = under(read_held(reader(cluster)), rid)
    assert held == {good: b'{"seq":1}'}
    assert UNREADABLE._value.get() - before == 3
    assert sum("unreadable: skipped" in r.getMessage() for r in caplog.records) == 3


def test_a_login_the_cluster_refuses_is_a_stream_unreadable_not_a_crash(cluster: Cluster):
    with pytest.raises(StreamUnreadable, match="Authorization"):
        read_held(reader(cluster, password="wrong"))


def test_a_node_that_is_down_is_passed_over_for_the_next(cluster: Cluster):
    """The relay is given every node's URL; the one it reads through may be the node that was killed."""
    rid = next(_rids) * 1000
    retain(cluster, {f"restaurant/{rid}/orders/open/1": b"{}"})
    dead = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    alive = reader(cluster)
    both = StreamReader([dead, cluster.nodes[0].nats_url], alive.user, alive.password, timeout=2.0)
    assert under(read_held(both), rid) == {f"restaurant/{rid}/orders/open/1": b"{}"}
    with pytest.raises(StreamUnreadable, match=dead):
        read_held(StreamReader([dead], alive.user, alive.password, timeout=2.0))


@pytest.mark.parametrize(
    ("headers", "data", "payload"),
    [
        (b"NATS/1.0\r\nNmqtt-RTopic:a/b\r\nNmqtt-RFlags:3\r\n\r\n", b"x", b"x"),
        (b"NATS/1.0\r\nNmqtt-RFlags:-3\r\n\r\n", b"", b""),  # a clear, kept until its origin deletes it
        (b"", b'{"origin":"o","subject":"a.b","topic":"a/b","msg":"eHk=","flags":1}', b"xy"),  # before 2.10
        (b"NATS/1.0\r\nNmqtt-RFlags:10\r\n\r\n", b"x", None),  # above the four flag bits
        (b"NATS/1.0\r\nNmqtt-RFlags:\r\n\r\n", b"x", None),
        (b"HTTP/1.1 200\r\nNmqtt-RFlags:3\r\n\r\n", b"x", None),
        (b"", b'{"msg":"not base64!"}', None),
        (b"", b"[1, 2]", None),
        (b"", b"\xff\xfe", None),
    ],
)
def test_a_stream_message_decodes_as_the_server_decodes_it(headers: bytes, data: bytes, payload: bytes | None):
    assert payload_of(headers, data) == payload


def test_stream_subjects_and_topics_map_as_the_gateway_maps_them():
    assert stream_subject("restaurant/+/orders/open/+") == "$MQTT.rmsgs.restaurant.*.orders.open.*"
    assert topic_of("$MQTT.rmsgs.restaurant.7.orders.open.12") == "restaurant/7/orders/open/12"
    assert topic_of("$MQTT.rmsgs.a./.b") == "a//b" and topic_of("$MQTT.rmsgs.a//b.c") == "a.b/c"
    assert topic_of("$MQTT.rmsgs.a./") == "a/" and topic_of("$MQTT.rmsgs./.a") == "/a"
    for bad in ("restaurant//orders", "restaurant/a.b/+"):
        with pytest.raises(ValueError):
            stream_subject(bad)
