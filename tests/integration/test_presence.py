"""Presence through the real bus: online with a boot id, offline on a clean stop, lost when killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from devices.link import DeviceLink
from tests.support import Stack, Subscriber, wait_for

KEEPALIVE = 2


@pytest.fixture
def shop(stack: Stack):
    rid = stack.add_restaurant("A", "a@example.com")
    return {
        "rid": rid,
        "admin": stack.http(stack.api_token("admin-a", "admin", rid)),
        "token": stack.add_device(rid, "tablet-1", "tablet"),
    }


def ignore(_message: object) -> None:
    """These links subscribe to nothing but their commands."""


def listed(shop: dict) -> dict:
    (device,) = shop["admin"].get(f"/restaurants/{shop['rid']}/devices").json()["data"]
    return device


def test_online_then_offline_with_boot_id_and_last_seen_in_the_api(stack: Stack, shop):
    assert listed(shop)["presence"] == "unknown" and listed(shop)["last_seen"] is None
    link = DeviceLink(
        shop["token"], "127.0.0.1", stack.settings.mqtt_port, subscriptions=[], on_message=ignore, persistent=True
    )
    with link:
        device = wait_for(lambda: (d := listed(shop))["presence"] == "online" and d)
        assert device["boot_id"] == link.boot_id and device["last_seen"] is not None
    device = wait_for(lambda: (d := listed(shop))["presence"] == "offline" and d)
    assert device["boot_id"] == link.boot_id

    second = DeviceLink(
        shop["token"], "127.0.0.1", stack.settings.mqtt_port, subscriptions=[], on_message=ignore, persistent=True
    )
    with second:
        wait_for(lambda: listed(shop)["boot_id"] == second.boot_id)
        assert second.boot_id != link.boot_id


def test_a_late_will_of_an_earlier_run_does_not_mark_a_running_device_lost(stack: Stack, shop, subscribers):
    rid = shop["rid"]
    raw = Subscriber(stack.settings.mqtt_port, "tablet-1", shop["token"])
    subscribers.append(raw)
    assert raw.connect() == 0
    topic = f"restaurant/{rid}/devices/tablet-1/status"

    def say(state: str, boot_id: str) -> None:
        body = json.dumps({"state": state, "boot_id": boot_id, "kind": "tablet", "ts": "x"})
        raw.client.publish(topic, body, qos=1, retain=True).wait_for_publish(5)

    say("online", "run-2")
    wait_for(lambda: listed(shop)["presence"] == "online")
    say("lost", "run-1")  # the Last Will of the run before, delivered late
    say("offline", "run-1")
    raw.subscribe(f"restaurant/{rid}/devices/tablet-1/commands")
    say("online", "run-2")  # a marker: once this is through, the two before it were handled
    time.sleep(0.5)  # nothing to wait for: the point is that presence does not change
    assert listed(shop)["presence"] == "online" and listed(shop)["boot_id"] == "run-2"
    say("lost", "run-2")
    wait_for(lambda: listed(shop)["presence"] == "lost")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"state": "asleep", "boot_id": "b"}, "bad_state"),
        ({"state": "online", "boot_id": 7}, "bad_type"),
        ({"state": "online", "boot_id": "x" * 65}, "bad_type"),
        ("online", "bad_type"),
    ],
)
def test_bad_status_messages_are_answered_and_change_nothing(stack: Stack, shop, subscribers, body, reason):
    rid = shop["rid"]
    raw = Subscriber(stack.settings.mqtt_port, "tablet-1", shop["token"])
    subscribers.append(raw)
    assert raw.connect() == 0
    raw.subscribe(f"restaurant/{rid}/devices/tablet-1/commands")
    raw.client.publish(f"restaurant/{rid}/devices/tablet-1/status", json.dumps(body), qos=1).wait_for_publish(5)
    (reply,) = raw.collect(1)
    assert reply.json()["type"] == "error" and reply.json()["reason"] == reason
    assert listed(shop)["presence"] == "unknown"


DEVICE_PROCESS = textwrap.dedent(
    """
    import sys, time
    from devices.link import DeviceLink
    link = DeviceLink(sys.argv[1], "127.0.0.1", int(sys.argv[2]), subscriptions=[], on_message=lambda m: None,
                      persistent=True, keepalive=int(sys.argv[3]))
    link.start()
    link.connected.wait(10)
    print("connected", flush=True)
    time.sleep(3600)
    """
)


def test_a_device_killed_without_disconnect_is_lost_within_one_and_a_half_keepalives(stack: Stack, shop):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    process = subprocess.Popen(
        [sys.executable, "-c", DEVICE_PROCESS, shop["token"], str(stack.settings.mqtt_port), str(KEEPALIVE)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "connected"
        wait_for(lambda: listed(shop)["presence"] == "online")
        process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        process.wait(5)
        wait_for(lambda: listed(shop)["presence"] == "lost", timeout=10)
        elapsed = time.monotonic() - killed
    finally:
        process.kill()
    # The broker's guard sweeps every 0.25 s and the ingest applies the Will right after.
    assert elapsed <= 1.5 * KEEPALIVE + 0.5, f"lost after {elapsed:.2f} s"


def test_a_device_without_boot_ids_still_has_presence(stack: Stack, shop, subscribers):
    raw = Subscriber(stack.settings.mqtt_port, "tablet-1", shop["token"])
    subscribers.append(raw)
    assert raw.connect() == 0
    topic = f"restaurant/{shop['rid']}/devices/tablet-1/status"
    raw.client.publish(topic, b'{"state": "online"}', qos=1, retain=True).wait_for_publish(5)
    wait_for(lambda: listed(shop)["presence"] == "online" and listed(shop)["boot_id"] is None)
    raw.client.publish(topic, b'{"state": "lost"}', qos=1, retain=True).wait_for_publish(5)
    wait_for(lambda: listed(shop)["presence"] == "lost")
