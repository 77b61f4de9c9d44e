"""The bridge part of a process (`orderbus bridge`, `orderbus up`): active while it holds the lease, standby otherwise.

Only the holder of the bridge lease (`bridge.lease`) has anything connected: a standby makes no MQTT
client (so it takes no client id from the active one), runs no sweeps and listens for no wakes. Gaining
the lease builds the parts afresh (relay, ingest, sweeper, wake listener; nothing of a previous turn is
reused) and starts them; losing it stops them, the relay first and without draining.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bridge.handlers import DeviceRules, device_rules
from bridge.ingest import Ingest
from bridge.lease import LeaseKeeper, lease_for
from bridge.mqtt import service_client
from bridge.nats_retained import StreamReader
from bridge.relay import Relay
from bridge.retained import HeldReader
from bridge.retention import prune_notifications, prune_outbox
from bridge.sweeper import Sweeper, prune_idempotency_keys
from bridge.wake import WakeListener, wake_listener
from core.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from cli.runtime import Parts

log = logging.getLogger("orderbus.bridge")
DRAIN_SECONDS = 5.0  # a clean stop: the relay publishes what is pending for up to this long


def retained_reader(parts: Parts) -> HeldReader | None:
    """On NATS, the relay reads what the cluster holds retained from its stream (bridge/nats_retained.py),
    as the deployment's read-only user, whose password is in the callout's credentials file of the data
    directory; without that file (a bridge apart, given no copy) it reads over MQTT, as on any broker."""
    settings = parts.settings
    if settings.broker_url is None:
        return None
    from broker.nats.callout import CREDENTIALS_FILE, Credentials, retained_reader_of  # the `nats` extra

    if not (settings.data_dir / CREDENTIALS_FILE).exists():
        log.warning(
            "no %s in %s: the relay reads the retained state over MQTT, which a NATS node restarted a moment "
            "ago may answer before it has loaded it",
            CREDENTIALS_FILE,
            settings.data_dir,
        )
        return None
    try:
        credentials = Credentials.load_or_create(settings.data_dir)
    except ValueError as exc:  # an unreadable file: the bridge still runs, as without one
        log.error("%s: the relay reads the retained state over MQTT", exc)
        return None
    reader = StreamReader(settings.nats_urls, retained_reader_of(credentials.auth_user), credentials.auth_password)
    return reader.held


class ActiveBridge:
    """Relay, ingest, sweeper and wake listener of one turn as the lease holder."""

    def __init__(self, parts: Parts, wake_relay: Callable[[], None], fence: Callable[[], bool]) -> None:
        settings, engine = parts.settings, parts.engine
        endpoints = settings.mqtt_endpoints  # several: a cluster's nodes, tried in turn (core.endpoints)
        host, port = endpoints[0]
        tls = settings.mqtt_tls_context()  # None: plain MQTT; checked at start-up (cli.main._settings)
        self.relay_client = service_client(
            "orderbus-relay", parts.service_token_factory("orderbus-relay"), endpoints=endpoints, tls=tls
        )
        self.relay = Relay(
            engine,
            self.relay_client,
            host,
            port,
            max_packet_bytes=settings.mqtt_max_packet_bytes,
            fence=fence,
            read_held=retained_reader(parts),
        )
        self.wake_listener: WakeListener = wake_listener(engine, settings.data_dir, self.relay.wake)
        self.ingest_client = service_client(
            "orderbus-ingest",
            parts.service_token_factory("orderbus-ingest"),
            clean_session=False,
            endpoints=endpoints,
            tls=tls,
        )
        self.rules: DeviceRules = device_rules(settings)
        self.ingest = Ingest(engine, self.ingest_client, host, port, self.rules.handlers, wake_relay)
        self.rules.sweeps.append(prune_outbox(settings.outbox_retention_days))
        self.rules.sweeps.append(prune_notifications(settings.notification_retention_days))
        self.rules.sweeps.append(prune_idempotency_keys())
        self.sweeper = Sweeper(lambda: UnitOfWork(engine, wake_relay), self.rules.sweeps, fence=fence)

    def start(self) -> None:
        self.wake_listener.start()
        self.relay.start()
        self.ingest.start()
        self.sweeper.start()

    def stop(self, graceful: bool) -> None:
        """Graceful (a clean stop, the lease still held): ingest and sweeps end, then the relay drains.
        Not graceful (the lease is lost): the relay stops publishing first, at once, without a drain."""
        if not graceful:
            self.relay.stop(drain_seconds=0)
        self.sweeper.stop()
        self.ingest.stop()  # a persistent session: what devices send meanwhile waits for the next holder
        self.wake_listener.stop()
        if graceful:
            self.relay.stop(drain_seconds=DRAIN_SECONDS)


class BridgeRole:
    """Keeps (or waits for) the lease and runs an `ActiveBridge` while it is held."""

    def __init__(self, parts: Parts, wake_relay: Callable[[], None]) -> None:
        self._parts = parts
        self._wake_relay = wake_relay
        self.active: ActiveBridge | None = None
        self.keeper = LeaseKeeper(lease_for(parts.engine, parts.settings.data_dir), self._activate, self._deactivate)

    def start(self) -> None:
        """Returns at once: active when the lease was free, standby otherwise (retrying on a thread)."""
        self.keeper.start()

    def stop(self) -> None:
        """Blocking: a clean stop of the active parts (relay drain included), then the lease is released."""
        self.keeper.stop()

    def connected(self, which: str) -> bool:
        """For /readyz: the active bridge's MQTT client `which` (relay, ingest) is connected; a standby
        has no connections by design, and is ready to take over."""
        active = self.active
        if active is None:
            return True
        client = active.relay_client if which == "relay" else active.ingest_client
        return bool(client.is_connected())

    def _activate(self) -> None:
        self.active = ActiveBridge(self._parts, self._wake_relay, self.keeper.still_held)
        self.active.start()

    def _deactivate(self, graceful: bool) -> None:
        active, self.active = self.active, None
        if active is not None:
            active.stop(graceful)
