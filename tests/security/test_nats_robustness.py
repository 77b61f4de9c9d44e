"""Our production broker, nats-server 2.15, against the malformed-packet corpus the embedded broker's parser
is tested with (test_malformed.py, test_packets.py): whatever NATS makes of each packet, the node stays up,
serves the next good client, a session connected before keeps receiving, and none of the corpus's malformed
PUBLISHes reaches it. How NATS answers each packet is measured and printed, not asserted (its parser is not
ours to specify). Its limits (`max_payload`, `max_pending`, `max_connections`, the MQTT and WebSocket
timeouts) are configuration, set in config/nats/cluster.conf and broker/nats/conf.py `NatsLimits` (which
tests/integration/test_nats_conf.py compares), and are not tested again here.

One node of the session's cluster (tests/nats.py `NatsBus`), with a responder of this module's."""

from __future__ import annotations

import collections
import random
import select
import socket

from scripts import raw_mqtt as raw
from tests.security.checks import (  # noqa: F401  (broker_log is an autouse fixture)
    ACCEPTED,
    PINGRESP,
    assert_still_serves,
    broker_log,
    connected,
    opened,
)
from tests.security.test_malformed import AFTER_CONNECT, FIRST_PACKETS
from tests.security.test_packets import CLOSES
from tests.support import Subscriber, wait_for

JUNK_SEED, JUNK_COUNT = 13, 50


def _junk(rng: random.Random) -> bytes:
    """The shapes test_malformed's hypothesis strategy draws: random bytes, random packets, a packet and bytes."""

    def one_packet() -> bytes:
        return raw.packet(rng.randrange(256), rng.randbytes(rng.randrange(81)))

    shape = rng.randrange(3)
    if shape == 0:
        return rng.randbytes(rng.randrange(1, 301))
    if shape == 1:
        return b"".join(one_packet() for _ in range(rng.randrange(1, 7)))
    return one_packet() + rng.randbytes(rng.randrange(1, 41))


def _outcomes(socks: dict[str, socket.socket], quiet: float = 1.0) -> dict[str, str]:
    """What each connection got after its packet (and a PINGREQ): `closed`, `answered <packet type>` (the first
    packet back), or `open` (nothing within `quiet` seconds of the last answer anywhere)."""
    waiting = dict(socks)
    seen: dict[str, str] = {}
    while waiting:
        readable, _, _ = select.select(list(waiting.values()), [], [], quiet)
        if not readable:
            break
        for name in [n for n, s in waiting.items() if s in readable]:
            sock = waiting.pop(name)
            sock.settimeout(quiet)
            try:
                answer = raw.read_packet(sock)
            except (ConnectionError, TimeoutError):  # a reset is a close; a partial packet counts as closed too
                answer = None
            seen[name] = "closed" if answer is None else f"answered {answer[0]}"
    return seen | {name: "open" for name in waiting}


def test_a_nats_node_survives_the_malformed_packet_corpus(nats_broker):
    broker = nats_broker.begin()
    try:
        # a session connected before everything, on a literal restaurant id no other test uses on the cluster
        # (theirs are 1000 and above): the corpus's packets name restaurant/7
        before_id = "corpus-watch"
        watch = Subscriber(broker.port, before_id, broker.token(before_id, "super_admin", rid=None))
        assert watch.connect() == ACCEPTED
        assert watch.subscribe("restaurant/7/#", qos=0) == 0
        socks: dict[str, socket.socket] = {}
        for name, packet in FIRST_PACKETS:
            sock = opened(broker, raw.open_socket(broker.port))
            sock.sendall(packet)
            socks[f"first:{name}"] = sock
        rng = random.Random(JUNK_SEED)
        after: list[tuple[str, bytes | None]] = [(f"after:{r}-{i}", p) for i, (r, p) in enumerate(AFTER_CONNECT)]
        after += [(f"packets:{r}-{statement}-{i}", p) for i, (r, p, statement) in enumerate(CLOSES)]
        after += [(f"junk-{i}", _junk(rng)) for i in range(JUNK_COUNT)]
        for i, (name, attack) in enumerate(after):
            client_id = f"corpus-{i}"
            sock = connected(broker, client_id, "service", rid=None)  # may publish anywhere: only the parser judges
            if attack is None:  # a second CONNECT
                attack = raw.connect(client_id, broker.token(client_id, "service", rid=None))
            sock.sendall(attack + raw.PINGREQ)
            socks[name] = sock
        outcomes = _outcomes(socks)
        # measured, not asserted: how NATS 2.15 answers the corpus
        print(f"\nNATS answers to {len(socks)} malformed packets: {dict(collections.Counter(outcomes.values()))}")
        for name, outcome in sorted(outcomes.items()):
            print(f"  {name}: {outcome}")
        assert broker.alive(), "the node is down after the corpus"
        forged = [m.topic for m in watch.drain(quiet=0.3) if m.payload == b"forged"]
        assert forged == [], f"malformed publishes were delivered on {forged}"
        bus = connected(broker, "corpus-bus", "service", rid=None)
        bus.sendall(raw.publish("restaurant/7/orders", b"after the corpus", qos=1))
        assert raw.expect_packet(bus)[0] == 4  # PUBACK
        wait_for(lambda: b"after the corpus" in [m.payload for m in watch.drain(quiet=0.1)], timeout=5)
        assert watch.client.is_connected(), "the session connected before was dropped"
        assert_still_serves(broker)
        watch.close()
    finally:
        broker.end()
