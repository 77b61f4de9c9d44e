"""`host[:port][,host[:port]…]`, the one endpoint syntax of `--mqtt-host` and the device agents' `--host`."""

from __future__ import annotations

import pytest

from core.endpoints import EndpointError, Failover, describe, parse_endpoints


def test_a_list_keeps_its_order_fills_in_the_default_port_and_drops_repeats():
    got = parse_endpoints(" a:1884, b ,[::1]:1885,[fe80::1],a:1884", 1883)
    assert got == [("a", 1884), ("b", 1883), ("::1", 1885), ("fe80::1", 1883)]
    assert describe(got) == "a:1884,b:1883,[::1]:1885,[fe80::1]:1883"
    assert parse_endpoints("127.0.0.1", 9) == [("127.0.0.1", 9)]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "has an empty entry"),
        ("a,,b", "has an empty entry"),
        ("a,", "has an empty entry"),
        ("a:", "has an empty port"),
        ("a:0", "from 1 to 65535"),
        ("a:65536", "from 1 to 65535"),
        ("a:12x", "from 1 to 65535"),
        ("a:-1", "from 1 to 65535"),
        (":1883", "no usable host"),
        ("mqtt://a:1883", "no scheme here"),
        ("a b:1883", "no usable host"),
        ("::1", "put an IPv6 address in brackets"),
        ("[::1]x", "is not host[:port]"),
        ("[]:1883", "no usable host"),
    ],
)
def test_a_bad_list_is_one_line_naming_the_flag(text, complaint):
    with pytest.raises(EndpointError) as raised:
        parse_endpoints(text, 1883, "--host")
    message = str(raised.value)
    assert complaint in message and message.startswith("--host ") and "\n" not in message


class Recorder:
    """Only what Failover touches of a paho client: the two callbacks and connect_async."""

    def __init__(self) -> None:
        self.on_connect_fail = None
        self.on_disconnect = None
        self.dialled: list[tuple[str, int]] = []

    def connect_async(self, host: str, port: int, keepalive: int) -> None:
        self.dialled.append((host, port))


class Reason:
    def __init__(self, failure: bool) -> None:
        self.is_failure = failure


def test_failures_and_drops_move_round_robin_and_a_clean_disconnect_stays():
    client = Recorder()
    failover = Failover([("a", 1), ("b", 2), ("c", 3)], "t")
    failover.attach(client, keepalive=5)
    client.on_connect_fail(client, None)  # type: ignore[misc]
    client.on_disconnect(client, None, None, Reason(True), None)  # type: ignore[misc]
    client.on_disconnect(client, None, None, Reason(False), None)  # type: ignore[misc]  # our own disconnect()
    client.on_connect_fail(client, None)  # type: ignore[misc]
    assert client.dialled == [("b", 2), ("c", 3), ("a", 1)]
    assert failover.moves == 3


def test_one_endpoint_leaves_the_client_as_it_was():
    client = Recorder()
    Failover([("a", 1)], "t").attach(client, keepalive=5)
    assert client.on_connect_fail is None and client.on_disconnect is None
