"""devices.link.DeviceLink's reconnect back-off: spread per device, so that the fleet of a node that went
away does not come back in lockstep (issue 13's reconnect storm: every step of paho's plain 1, 2, 4, 8 s
back-off hit the cluster and its auth callout with the whole fleet at once)."""

from __future__ import annotations

import jwt
import pytest

from core.tokens import TokenService
from devices.link import RECONNECT_MAX_DELAY, RECONNECT_MIN_DELAY, DeviceLink

TOKENS = TokenService(b"k" * 32)


def link(device_id: str) -> DeviceLink:
    token = TOKENS.issue(sub=device_id, role="printer", rid=7, audience="mqtt", ttl_seconds=60)
    return DeviceLink(token, "127.0.0.1", 1883, subscriptions=[], on_message=lambda _m: None, persistent=True)


def test_each_link_backs_off_from_its_own_random_first_pause() -> None:
    links = [link(f"printer-{n}") for n in range(40)]
    firsts = [made.reconnect_delays[0] for made in links]
    assert all(RECONNECT_MIN_DELAY[0] <= first <= RECONNECT_MIN_DELAY[1] for first in firsts)
    assert len(set(firsts)) == len(firsts)  # no two devices share a schedule
    for made, first in zip(links, firsts, strict=True):
        assert made.reconnect_delays[1] == pytest.approx(RECONNECT_MAX_DELAY + first - RECONNECT_MIN_DELAY[0])
        # what paho will use (it has no getter): the back-off doubles from here
        assert (made._client._reconnect_min_delay, made._client._reconnect_max_delay) == made.reconnect_delays


def test_a_token_without_a_device_identity_makes_no_link() -> None:
    token = jwt.encode({"sub": "x", "role": "printer"}, "k" * 32)  # no `rid`: TokenService would not issue it
    with pytest.raises(ValueError, match="device identity"):
        DeviceLink(token, "127.0.0.1", 1883, subscriptions=[], on_message=lambda _m: None, persistent=True)
    with pytest.raises(ValueError, match="not a JWT"):
        DeviceLink("garbage", "127.0.0.1", 1883, subscriptions=[], on_message=lambda _m: None, persistent=True)
