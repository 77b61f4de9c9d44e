"""Revoking a device through the API ends its live MQTT connection, through the real runtime."""

from __future__ import annotations

import time

from tests.support import Stack, Subscriber, wait_for

PRINTER = {"id": "printer-grill-9", "kind": "printer", "name": "Grill", "station": "grill"}


def test_revoking_a_connected_device_disconnects_it_within_a_second_and_refuses_it_after(stack: Stack, subscribers):
    rid = stack.add_restaurant("A", "a@example.com")
    admin = stack.http(stack.api_token("user-a", "admin", rid))
    created = admin.post(f"/restaurants/{rid}/devices", json=PRINTER)
    assert created.status_code == 201, created.text
    token = created.json()["token"]

    printer = Subscriber(stack.settings.mqtt_port, PRINTER["id"], token)
    subscribers.append(printer)
    assert printer.connect() == 0
    disconnected_at: list[float] = []
    printer.client.on_disconnect = lambda *_args: disconnected_at.append(time.monotonic())
    printer.client.reconnect_delay_set(30, 60)  # no reconnect attempt inside this test

    revoked_at = time.monotonic()
    assert admin.delete(f"/restaurants/{rid}/devices/{PRINTER['id']}").status_code == 204
    wait_for(lambda: disconnected_at, timeout=5)
    assert disconnected_at[0] - revoked_at <= 1.0

    again = Subscriber(stack.settings.mqtt_port, PRINTER["id"], token)
    subscribers.append(again)
    assert again.connect() == 135  # not authorized


def test_a_reissued_token_replaces_the_old_one_at_the_broker(stack: Stack, subscribers):
    rid = stack.add_restaurant("A", "a@example.com")
    admin = stack.http(stack.api_token("user-a", "admin", rid))
    old = admin.post(f"/restaurants/{rid}/devices", json=PRINTER).json()["token"]
    new = admin.post(f"/restaurants/{rid}/devices/{PRINTER['id']}/token").json()["token"]
    old_claims = stack.parts.tokens.verify(old, audience="mqtt")
    wait_for(lambda: stack.runtime.revocations.refuses(old_claims), timeout=3)  # re-read twice a second
    stale = Subscriber(stack.settings.mqtt_port, PRINTER["id"], old)
    subscribers.append(stale)
    assert stale.connect() == 135
    fresh = Subscriber(stack.settings.mqtt_port, PRINTER["id"], new)
    subscribers.append(fresh)
    assert fresh.connect() == 0
