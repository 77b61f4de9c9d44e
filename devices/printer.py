"""The kitchen printer agent (`orderbus device printer`): its station's tickets, printed once each, in order.

MQTT thread: a ticket arrives → checked (`devices.ticket`) → stored in the journal → acknowledged.
The acknowledgement waits for the journal, not for the paper: an unacknowledged delivery stays in
flight at the broker (resent only when the printer reconnects) and holds a place in its window, and a
busy printer (or one out of paper for ten minutes) takes far longer than a delivery should.
From the journal on, the ticket is ours: a crash before it is stored makes the broker deliver it
again; after, the journal prints it.
The printing itself is `devices.print_worker`, on its own thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import ssl
import threading
import time
from datetime import tzinfo
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from core.domain import OPEN_STATUSES
from core.rate_limit import TokenBucket
from devices.catchup import INTERVAL_SECONDS, CatchUp, DeviceApi, Snapshot
from devices.journal import Journal
from devices.link import DeviceLink, Identity, utc_iso
from devices.print_worker import PrintWorker
from devices.printer_io import Printer, open_printer
from devices.refusal import refuse_early
from devices.ticket import BadTicket, parse_envelope

log = logging.getLogger("orderbus.devices.printer")


# Half the broker's per-device publish limit (broker/limits.py: 20/s, burst 60). The broker drops a
# device's publishes beyond it without telling the device, so a printer reporting a long backlog at
# once (or `failed` for fifty queued tickets) must slow down itself.
REPORTS_PER_SECOND = 10.0
REPORT_BURST = 30


class PrinterAgent:
    """The whole agent: `with PrinterAgent(...)`: journal, worker, and the device's MQTT link."""

    def __init__(
        self,
        *,
        token: str,
        primary: Printer,
        backup: Printer | None,
        state_dir: Path,
        failover_seconds: float,
        host: str,
        port: int,
        keepalive: int = 30,
        tls: ssl.SSLContext | None = None,
        api_url: str | None = None,
        catchup_seconds: float = INTERVAL_SECONDS,
        poll_seconds: float = 3.0,
        retry_seconds: float = 1.0,
        tz: tzinfo | None = None,
    ) -> None:
        self.identity = Identity.from_token(token)
        if self.identity.role != "printer" or not self.identity.station:
            raise ValueError("the token is not a printer's: it has no station to print for")
        # One journal per device: printers sharing a state directory must not share what they printed.
        self.journal = Journal(state_dir / f"{self.identity.device_id}.journal.sqlite3")
        self.link = DeviceLink(
            token,
            host,
            port,
            subscriptions=[self.identity.tickets_topic],
            on_message=self._message,
            persistent=True,
            manual_ack=True,
            keepalive=keepalive,
            tls=tls,
            api_url=api_url,
            expected_role="printer",
        )
        self._missed: list[dict[str, Any]] = []  # catch-up's tickets, printed once its run has read everything
        self._closed: dict[int, bool] = {}  # order id → closed, by the latest event of the run
        self.catchup: CatchUp | None = None
        if api_url is not None:  # without it, MQTT only: what the broker delivers is all it gets
            self.catchup = CatchUp(
                DeviceApi(api_url, token),
                types=["kitchen_ticket", "new_order", "order_updated"],
                load=self.journal.cursor,
                save=self.journal.set_cursor,
                apply=self._caught_up,
                finish=self._print_caught_up,
                restart=self._restart,
                interval=catchup_seconds,
            )
            self.link.on_ready = self.catchup.trigger
        self._pacer = TokenBucket(REPORTS_PER_SECOND, REPORT_BURST)
        self.worker = PrintWorker(
            primary=primary,
            backup=backup,
            journal=self.journal,
            report=self._report,
            failover_seconds=failover_seconds,
            poll_seconds=poll_seconds,
            retry_seconds=retry_seconds,
            tz=tz,
        )

    def __enter__(self) -> PrinterAgent:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.worker.start()
        self.link.start()
        if self.catchup is not None:
            self.catchup.start()

    def stop(self) -> None:
        """Worker first, so a ticket being printed is still reported; then `offline` and disconnect."""
        if self.catchup is not None:
            self.catchup.stop()
        self.worker.stop()
        self.link.stop()  # waits for the PUBACK of `offline`, so of every event published before it
        self.worker.settle_reports()
        self.journal.close()

    def _report(self, body: dict[str, Any]) -> mqtt.MQTTMessageInfo:
        """An event from the worker thread, paced to stay within the broker's limit."""
        time.sleep(self._pacer.take())
        return self.link.publish("events", body)

    def _message(self, message: mqtt.MQTTMessage) -> None:
        """On paho's thread: check, journal, acknowledge. Printing happens on the worker."""
        if message.topic == self.identity.tickets_topic:
            self._ticket(message.payload)
        elif message.topic == self.identity.topic("commands"):
            self._command(message.payload)
        self.link.ack(message)  # not reached if the journal failed: the broker delivers it again

    def _caught_up(self, envelope: dict[str, Any]) -> None:
        """One event read back by catch-up: tickets wait for `_print_caught_up`, orders say which closed."""
        data = envelope.get("data")
        if not isinstance(data, dict):
            return
        if envelope.get("type") == "kitchen_ticket":
            self._missed.append(envelope)
        elif isinstance(order := data.get("order"), dict) and isinstance(order.get("id"), int):
            self._closed[order["id"]] = order.get("status") not in OPEN_STATUSES

    def _print_caught_up(self) -> None:
        """The missed tickets, through the live path (the journal dedupes by id), but the bus's rule
        first: a ticket of an order served or cancelled meanwhile is not worth paper; its void is."""
        missed, closed = self._missed, self._closed
        self._missed, self._closed = [], {}
        for envelope in missed:
            ticket = envelope["data"].get("ticket")
            order_id = ticket.get("order_id") if isinstance(ticket, dict) else None
            served = isinstance(order_id, int) and closed.get(order_id, False)
            whole_void = isinstance(ticket, dict) and ticket.get("kind") == "void" and ticket.get("partial") is not True
            if served and isinstance(ticket, dict) and not whole_void:
                log.info("ticket %s not printed: its order closed while the printer was away", ticket.get("id"))
                continue
            self._ticket(json.dumps(envelope, ensure_ascii=False).encode())

    def _restart(self, snapshot: Snapshot) -> None:
        """No cursor (a new journal) or one the bus cannot continue: go on from the bus's latest seq.

        Tickets before it are not printed: a new printer starts with what comes next, and tickets
        older than the bus keeps are too old for the kitchen.
        """
        if self.journal.cursor() is not None:
            log.warning(
                "the bus cannot go on from the journal's cursor; printing what comes after seq %d", snapshot.seq
            )

    def _ticket(self, payload: bytes | bytearray) -> None:
        try:
            ticket = parse_envelope(payload)
        except BadTicket as exc:
            log.warning("refused a ticket message (%d bytes): %s", len(payload), exc)
            if exc.ticket_id is not None and self._pacer.try_take():  # a flood of bad tickets is only logged
                body = {"type": "failed", "ticket_id": exc.ticket_id, "reason": "error"}
                self.link.publish("events", {**body, "detail": f"unprintable: {exc}"[:300], "ts": utc_iso()})
            return
        if ticket.station != self.identity.station:
            log.warning("ticket %s is for %s, printed at %s", ticket.id, ticket.station, self.identity.station)
        if self.journal.receive(ticket):
            self.worker.accept(ticket)

    def _command(self, payload: bytes | bytearray) -> None:
        """The bus replies here; an `error` means it refused one of our reports."""
        log.info("from the bus: %.300s", payload.decode("utf-8", "replace"))


def run(
    *,
    token: str,
    printer: str,
    backup: str | None,
    state_dir: Path,
    failover_seconds: float,
    host: str,
    port: int,
    keepalive: int,
    api_url: str,
    tls: ssl.SSLContext | None = None,
) -> None:
    """`orderbus device printer`: bad options exit with code 2 and a clear message; runs until signalled."""
    import typer

    from core import logs

    logs.add_secret(token)  # redacted should anything ever log it
    logs.configure()
    refuse_early(token, "printer", api_url, host, port, tls)
    try:
        primary = open_printer(printer)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--printer") from None
    try:
        backup_printer = open_printer(backup) if backup else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--backup") from None
    if failover_seconds < 0:
        raise typer.BadParameter("must be zero or more", param_hint="--failover-seconds")
    try:
        agent = PrinterAgent(
            token=token,
            primary=primary,
            backup=backup_printer,
            state_dir=state_dir,
            failover_seconds=failover_seconds,
            host=host,
            port=port,
            keepalive=keepalive,
            tls=tls,
            api_url=api_url,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--token") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agent.link.on_refused = lambda _refusal: stop.set()  # the link said why, once: nothing left to try
    with agent:
        log.info("printer %s for %s: printing on %s", agent.identity.device_id, agent.identity.station, primary.name)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: leave cleanly, saying `offline`
            stop.wait()
    if agent.link.refusal is not None:
        raise SystemExit(2)
