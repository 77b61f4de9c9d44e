"""Catch-up by seq: what a device missed on MQTT, read back from the bus's REST API.

A broker restart loses retained state and queued messages; a retained message or a QoS 1
delivery can be lost on the way. So on every (re)connect (once its subscriptions are in place),
and every `interval` seconds besides, the agent asks
`GET /api/v1/restaurants/{rid}/devices/{did}/events?after=<cursor>` with its own broker token
and applies what comes back through the same code path as a live message (which dedupes).

The cursor is the seq up to which the device has applied *everything* it may see: it moves only
with the endpoint's `next_after`, never with a live message, because a live message after a
lost queue says nothing about the events before it. Seq gaps in what a device receives live are
normal (it sees only its share of the restaurant's events), so the timer stands in for gap
detection. With no cursor (a first start) or one the bus cannot continue (410: pruned, or the
bus's data reset), the agent reads the snapshot: the open orders it may see and the seq to go on from.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from devices.link import Identity

log = logging.getLogger("orderbus.devices.catchup")

INTERVAL_SECONDS = 30.0  # a check when nothing else triggers one
RETRY_SECONDS = 2.0  # after a failed check (the API down, a timeout)
PAGE = 500


class CatchUpError(RuntimeError):
    """The API did not answer usefully; the check is retried later (`refused`: the token was, so not soon)."""

    def __init__(self, detail: str, refused: bool = False) -> None:
        super().__init__(detail)
        self.refused = refused


class SeqGone(CatchUpError):
    """410: the cursor cannot be continued; restart from the snapshot."""


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    next_after: int
    head: int


@dataclass(frozen=True)
class Snapshot:
    seq: int
    open_orders: list[dict[str, Any]]


class DeviceApi:
    """The two catch-up routes, called with the device's own broker token."""

    def __init__(self, api_url: str, token: str, *, timeout: float = 10.0) -> None:
        identity = Identity.from_token(token)
        base = f"{api_url.rstrip('/')}/api/v1/restaurants/{identity.restaurant_id}/devices/{identity.device_id}"
        self._http = httpx.Client(base_url=base, headers={"authorization": f"Bearer {token}"}, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def events(self, after: int, types: Sequence[str] = (), limit: int = PAGE) -> Page:
        body = self._get("/events", {"after": after, "limit": limit, "type": list(types)})
        return Page(list(body["events"]), int(body["next_after"]), int(body["head"]))

    def snapshot(self) -> Snapshot:
        body = self._get("/snapshot", {})
        return Snapshot(int(body["seq"]), list(body["open_orders"]))

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise CatchUpError(f"{path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 410:
            raise SeqGone(response.text[:300])
        if response.status_code != 200:
            refused = response.status_code in (401, 403)
            raise CatchUpError(f"{path}: HTTP {response.status_code}: {response.text[:300]}", refused)
        try:
            body = response.json()
        except ValueError as exc:
            raise CatchUpError(f"{path}: not JSON") from exc
        if not isinstance(body, dict):
            raise CatchUpError(f"{path}: not a JSON object")
        return body


class CatchUp:
    """One thread that brings the device up to the bus's latest seq whenever asked (`trigger`) and every `interval`.

    `load` / `save` keep the cursor (None: no memory); `apply` takes one envelope the way a live
    message is taken; `finish` runs once a run has read everything, before the cursor is saved;
    `restart` takes a snapshot before the cursor jumps to its seq.
    """

    def __init__(
        self,
        api: DeviceApi,
        *,
        types: Sequence[str],
        load: Callable[[], int | None],
        save: Callable[[int], None],
        apply: Callable[[dict[str, Any]], None],
        restart: Callable[[Snapshot], None],
        finish: Callable[[], None] = lambda: None,
        interval: float = INTERVAL_SECONDS,
        retry: float = RETRY_SECONDS,
    ) -> None:
        self.api, self.types = api, tuple(types)
        self._load, self._save, self._apply, self._restart, self._finish = load, save, apply, restart, finish
        self.interval, self.retry = interval, retry
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device-catchup", daemon=True)
        self.runs = 0  # completed checks, for tests and logs

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(15)
        self.api.close()

    def trigger(self) -> None:
        """Check now (thread-safe; called on paho's thread when the subscriptions are in place)."""
        self._wake.set()

    def run_once(self) -> int:
        """Read and apply everything after the cursor up to the head; the number of events read.

        The cursor is saved once, after `finish`: a run cut short (a crash, the API gone) is read
        again from the old cursor, and applying an event twice is harmless.
        """
        cursor = self._load()
        if cursor is None:
            cursor = self._from_snapshot()
        read, restarted = 0, False
        while not self._stopping.is_set():
            try:
                page = self.api.events(cursor, self.types)
            except SeqGone as exc:
                if restarted:
                    raise
                log.warning("catch-up from seq %d is not possible (%s); restarting from the snapshot", cursor, exc)
                cursor, restarted = self._from_snapshot(), True
                continue
            for envelope in page.events:
                self._apply(envelope)
            read += len(page.events)
            if page.next_after <= cursor:
                break  # nothing after the cursor
            cursor = page.next_after
            if cursor >= page.head:
                break
        self._finish()
        self._save(cursor)
        return read

    def _from_snapshot(self) -> int:
        snapshot = self.api.snapshot()
        self._restart(snapshot)
        return snapshot.seq

    def _run(self) -> None:
        wait = 0.0
        while not self._stopping.is_set():
            self._wake.wait(wait)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                read = self.run_once()
            except CatchUpError as exc:
                wait = self.interval if exc.refused else self.retry
                log.warning("catch-up failed, retrying in %.0f s: %s", wait, exc)
                continue
            except Exception:  # a bad event must not end catch-up for good
                log.exception("catch-up failed, retrying in %.0f s", self.retry)
                wait = self.retry
                continue
            self.runs += 1
            if read:
                log.info("caught up: %d event(s) read", read)
            wait = self.interval
