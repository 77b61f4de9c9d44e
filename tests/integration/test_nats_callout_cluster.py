"""The callout responder in front of a three-node NATS 2.15.1 cluster, connected to node 0 only.

Every node sends its authorization requests to the responder through the cluster's routes, and a
revocation must reach a connection wherever it is: the kick is addressed to the node holding it
(`$SYS.REQ.SERVER.<id>.KICK`), and a responder that starts recalls the connections of every node.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.nats_callout_support import NatsCallout, seconds_to_disconnect
from tests.support import Subscriber, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCallout]:
    made = NatsCallout(tmp_path_factory.mktemp("nats-callout-cluster"), nodes=3)
    try:
        made.start_server()
        made.start_responder()
        yield made
    finally:
        made.stop()


@pytest.fixture(scope="module")
def rid(cluster: NatsCallout) -> int:
    return cluster.add_restaurant("Bistro", "admin@bistro.test")


@pytest.fixture
def clients() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for client in made:
        client.close()


def on(
    cluster: NatsCallout, clients: list[Subscriber], node: int, client_id: str, token: str, **kw: object
) -> Subscriber:
    client = Subscriber(cluster.nodes[node].mqtt_port, client_id, token, **kw)  # type: ignore[arg-type]
    clients.append(client)
    assert client.connect() == 0, cluster.log_tail(1500)
    return client


def test_every_node_asks_the_one_responder_and_a_revocation_reaches_any_node(
    cluster: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    printers = [
        on(
            cluster,
            clients,
            node,
            f"c-printer-{node}",
            cluster.add_device(rid, f"c-printer-{node}", "printer", station="grill"),
        )
        for node in range(3)
    ]
    took = seconds_to_disconnect(printers[2], lambda: cluster.revoke(rid, "c-printer-2"))
    assert took <= 1.0, f"revoked device on another node still connected after {took:.2f}s"
    assert printers[0].client.is_connected() and printers[1].client.is_connected()
    assert not cluster.connz(2, mqtt_client="c-printer-2")["connections"]


def test_a_starting_responder_recalls_every_nodes_connections(
    cluster: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    tablet = on(cluster, clients, 1, "c-tablet", cluster.add_device(rid, "c-tablet", "tablet"))
    scale = on(cluster, clients, 2, "c-scale", cluster.add_device(rid, "c-scale", "scale"))
    cluster.stop_responder()
    cluster.revoke(rid, "c-tablet")
    cluster.start_responder()
    wait_for(lambda: not tablet.client.is_connected(), timeout=5)
    assert scale.client.is_connected()
    cluster.revoke(rid, "c-scale")
    wait_for(lambda: not scale.client.is_connected(), timeout=5)


def test_a_persistent_session_moves_between_nodes_with_the_same_permissions(
    cluster: NatsCallout, clients: list[Subscriber], rid: int
) -> None:
    token = cluster.add_device(rid, "c-kds", "tablet")
    first = on(cluster, clients, 1, "c-kds", token, clean_session=False)
    assert first.subscribe(f"restaurant/{rid}/kitchen/+/tickets", qos=1) == 1
    assert first.subscribe(f"restaurant/{rid + 1}/kitchen/+/tickets", qos=1) == 0x80
    first.close()
    service = on(cluster, clients, 0, "c-service", cluster.mqtt_token("c-service", "service", None))
    service.client.publish(f"restaurant/{rid}/kitchen/bar/tickets", b"ticket", qos=1).wait_for_publish(5)
    again = on(cluster, clients, 2, "c-kds", token, clean_session=False)
    assert [m.payload for m in again.collect(1)] == [b"ticket"]
