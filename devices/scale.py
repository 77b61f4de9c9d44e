"""The stock scale agent: `orderbus device scale` (docs/devices.md, "Scale readings").

Weights come from a simulated HX711 load cell (through the stability filter; its stdin steers it:
`-250` takes 250 g off, `+250` puts 250 g on, `5000` sets the weight) or, with `--stdin`, from
standard input, one number of grams per line, taken as already stable. Each stable weight is
published once on `restaurant/{rid}/devices/{did}/readings` as
`{"item_id", "grams", "seq", "boot_id", "ts"}`; the latest one is repeated every heartbeat
(`ORDERBUS_SCALE_HEARTBEAT_SECONDS`, default 10, the bus's own setting) so the bus can tell a
quiet scale from a dead one. A `{"type": "tare"}` command zeroes the scale; the
bus's `error` replies are printed on stderr, so whoever runs the scale sees what was refused.

Tare here zeroes the platform (the device's own offset); the container's weight is the device's
`tare_grams` at the bus, which subtracts it from every reading.
"""

from __future__ import annotations

import json
import math
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from devices.link import DeviceLink, utc_iso
from devices.load_cell import LoadCell
from devices.refusal import refuse_early
from devices.stability import StabilityFilter

HEARTBEAT_ENV = "ORDERBUS_SCALE_HEARTBEAT_SECONDS"  # the bus's own setting, read the same way
DEFAULT_HEARTBEAT_SECONDS = 10.0
FLUSH_SECONDS = 10.0  # at end of stdin: how long to wait for the broker to take the last reading
LINGER_SECONDS = 0.5  # then: how long to stay for an error reply about it

Send = Callable[[dict[str, Any]], Any]


def parse_grams(text: str) -> float:
    """One line of stdin as grams; ValueError says why it is not a weight."""
    try:
        grams = float(text)
    except ValueError:
        raise ValueError(f"not a number of grams: {text[:40]!r}") from None
    if not math.isfinite(grams):
        raise ValueError(f"not a finite weight: {text[:40]!r}")
    return grams


def heartbeat_from_env() -> float:
    """The heartbeat the bus expects: `ORDERBUS_SCALE_HEARTBEAT_SECONDS`, else the documented 10 s."""
    raw = os.environ.get(HEARTBEAT_ENV)
    if raw is None:
        return DEFAULT_HEARTBEAT_SECONDS
    value = float(raw)
    if not 0 < value <= 3600:
        raise ValueError(f"{HEARTBEAT_ENV} must be between 0 and 3600 seconds, not {raw}")
    return value


class Reporter:
    """Numbers readings (`seq` per boot), publishes them in order, and repeats the latest as a heartbeat.

    While the link is down nothing is published (a backlog of old weights would only be refused
    as replayed); the latest weight is sent as soon as the link is back.
    """

    def __init__(
        self,
        send: Send,
        *,
        item_id: int,
        boot_id: str,
        heartbeat_seconds: float,
        connected: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
        out: TextIO | None = None,
    ) -> None:
        if heartbeat_seconds <= 0:
            raise ValueError("the heartbeat must be a positive number of seconds")
        self._send, self._connected, self._clock = send, connected, clock
        self._item_id, self._boot_id = item_id, boot_id
        self._heartbeat = heartbeat_seconds
        self._out = out
        self._lock = threading.Lock()  # one publish at a time, so seq order is publish order
        self._seq = 0
        self._latest: float | None = None
        self._pending = False  # the latest weight has not been published yet
        self._online = False
        self._last_sent = -math.inf
        self.last_info: Any = None  # the last publish (paho's MQTTMessageInfo), to wait for its PUBACK

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def pending(self) -> bool:
        return self._pending

    def report(self, grams: float) -> None:
        """A new stable weight: publish it now, or as soon as the link is up."""
        with self._lock:
            self._latest = round(grams, 1)
            self._pending = True
            if self._connected():
                self._publish()

    def tick(self) -> None:
        """Publish what is due: a weight held back while offline, the latest after a reconnect, a heartbeat."""
        with self._lock:
            if not self._connected():
                self._online = False
                return
            if not self._online:
                self._online = True
                self._pending = self._latest is not None  # a fresh session: say where we are at once
            if self._latest is not None and (self._pending or self._clock() - self._last_sent >= self._heartbeat):
                self._publish()

    def run(self, stop: threading.Event, interval: float = 0.1) -> None:
        while not stop.wait(interval):
            self.tick()

    def _publish(self) -> None:
        assert self._latest is not None
        self._seq += 1
        body = {"item_id": self._item_id, "grams": self._latest, "seq": self._seq, "boot_id": self._boot_id}
        body["ts"] = utc_iso()
        self.last_info = self._send(body)
        self._pending = False
        self._last_sent = self._clock()
        if self._out is not None:
            print(f"reading {self._latest:g} g (seq {self._seq})", file=self._out, flush=True)


class ScaleAgent:
    """What a scale does with weights and commands, whatever the weights come from."""

    def __init__(self, reporter: Reporter, stability: StabilityFilter | None, err: TextIO | None = None) -> None:
        self._reporter = reporter
        self._filter = stability  # None: the source gives stable weights already (stdin)
        self._err = err if err is not None else sys.stderr
        self._lock = threading.Lock()  # samples arrive on one thread, tare on the MQTT thread
        self._offset = 0.0
        self._latest_raw: float | None = None

    @property
    def offset(self) -> float:
        return self._offset

    def sample(self, raw: float) -> None:
        """One load-cell sample; publishes when the filter says the weight settled somewhere new."""
        assert self._filter is not None, "sample() needs a stability filter"
        with self._lock:
            self._latest_raw = raw
            stable = self._filter.add(raw)
            if stable is not None:
                self._reporter.report(stable - self._offset)

    def stable(self, raw: float) -> None:
        """A weight that is stable already (a line of stdin)."""
        with self._lock:
            self._latest_raw = raw
            self._reporter.report(raw - self._offset)

    def tare(self) -> bool:
        """Zero the scale on what it weighs now; False when it has weighed nothing yet."""
        with self._lock:
            zero = self._filter.mean() if self._filter is not None else self._latest_raw
            if zero is None:
                return False
            self._offset = zero
            if self._filter is not None:
                self._filter.forget_published()  # the next settled window is published, near 0
            elif self._latest_raw is not None:
                self._reporter.report(self._latest_raw - self._offset)
            return True

    def command(self, payload: bytes) -> None:
        """A message on the scale's commands topic: `tare`, or the bus's reply to a reading."""
        try:
            body = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            self._say(f"unreadable command ({len(payload)} bytes)")
            return
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "tare":
            if self.tare():
                self._say(f"tared: zero is now {self._offset:.1f} g raw")
            else:
                self._say("tare ignored: nothing weighed yet")
        elif kind == "error":
            self._say(f"bus refused {body.get('topic')}: {body.get('reason')}: {body.get('detail')}")
        elif kind != "ack":
            self._say(f"ignored command {kind!r}")

    def _say(self, text: str) -> None:
        print(text, file=self._err, flush=True)


def _weights(lines: Iterable[str], err: TextIO, hint: str) -> Iterator[tuple[str, float]]:
    """(line, grams) for each line that is a weight; a bad line is reported on `err` with `hint`."""
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            grams = parse_grams(text)
        except ValueError as exc:
            print(f"line {number}: {exc}; {hint}", file=err, flush=True)
            continue
        yield text, grams


def feed_stdin(agent: ScaleAgent, lines: Iterable[str], err: TextIO) -> None:
    """`--stdin`: each line is a stable weight in grams; a bad line is reported and skipped."""
    for _text, grams in _weights(lines, err, "skipped"):
        agent.stable(grams)


def steer_load_cell(cell: LoadCell, lines: Iterable[str], err: TextIO) -> None:
    """Simulation: `-250` takes 250 g off the platform, `+250` puts 250 g on, `5000` sets the weight."""
    for text, grams in _weights(lines, err, "use -GRAMS, +GRAMS or GRAMS"):
        if text[0] in "+-":
            cell.add(grams)
        else:
            cell.set_weight(grams)


def run(
    *,
    token: str,
    item: int,
    stdin: bool,
    grams: float,
    host: str,
    port: int,
    keepalive: int,
    tls: ssl.SSLContext | None = None,
    api_url: str | None = None,
    heartbeat_seconds: float | None = None,
    rate_hz: float = 20.0,
    stop: threading.Event | None = None,
    lines: Iterable[str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> None:
    """Run the scale until interrupted (SIGINT, SIGTERM, `stop`) or, with `stdin`, until end of input."""
    refuse_early(token, "scale", api_url, host, port, tls)
    # a refusal ends a blocking read of the process's own stdin by SIGINT: only from the main thread, only then
    interrupt = stdin and lines is None and threading.current_thread() is threading.main_thread()
    stop = stop or threading.Event()
    lines = lines if lines is not None else sys.stdin
    out, err = out or sys.stdout, err or sys.stderr
    heartbeat = heartbeat_seconds if heartbeat_seconds is not None else heartbeat_from_env()
    agent: ScaleAgent | None = None

    def on_command(message: Any) -> None:
        if agent is not None:
            agent.command(message.payload)

    link = DeviceLink(
        token,
        host,
        port,
        subscriptions=[],
        on_message=on_command,
        persistent=False,
        keepalive=keepalive,
        tls=tls,
        api_url=api_url,
        expected_role="scale",
        on_refused=lambda _refusal: _stop_reading(stop, interrupt=interrupt),  # said why, once: nothing to try
    )
    reporter = Reporter(
        lambda body: link.publish("readings", body, qos=1),
        item_id=item,
        boot_id=link.boot_id,
        heartbeat_seconds=heartbeat,
        connected=link.connected.is_set,
        out=out,
    )
    window = max(2, round(rate_hz / 2))  # half a second of samples
    agent = ScaleAgent(reporter, None if stdin else StabilityFilter(window=window), err=err)
    _interrupt_on_sigterm()
    link.start()
    beat = threading.Thread(target=reporter.run, args=(stop,), name="scale-heartbeat", daemon=True)
    beat.start()
    try:
        if stdin:
            feed_stdin(agent, lines, err)
            _flush(link, reporter, err)
        else:
            cell = LoadCell(grams, rate_hz=rate_hz)
            threading.Thread(target=steer_load_cell, args=(cell, lines, err), name="scale-steer", daemon=True).start()
            for raw in cell.samples(stop):
                agent.sample(raw)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        beat.join()
        link.stop()
    if link.refusal is not None:
        raise SystemExit(2)


def _stop_reading(stop: threading.Event, *, interrupt: bool) -> None:
    """Stop the scale from the link's thread: `stop` ends the load cell; a blocking read of stdin in the main
    thread needs a real SIGINT (as Ctrl-C: a simulated one waits for the read to return)."""
    stop.set()
    if interrupt:
        os.kill(os.getpid(), signal.SIGINT)


def _flush(link: DeviceLink, reporter: Reporter, err: TextIO) -> None:
    """End of stdin: make sure the last weight reached the broker before leaving."""
    deadline = time.monotonic() + FLUSH_SECONDS
    while (reporter.pending or not link.connected.is_set()) and time.monotonic() < deadline:
        reporter.tick()
        time.sleep(0.05)
    info = reporter.last_info
    if reporter.pending or info is None:
        if reporter.pending:
            print("the last reading was not sent: no connection to the broker", file=err, flush=True)
        return
    try:
        info.wait_for_publish(max(0.1, deadline - time.monotonic()))
    except (RuntimeError, ValueError):
        print("the last reading was not acknowledged by the broker", file=err, flush=True)
        return
    time.sleep(LINGER_SECONDS)  # an error reply about it is printed before we go


def _interrupt_on_sigterm() -> None:
    """SIGTERM stops the scale like Ctrl-C: `offline` is published instead of the Last Will."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.default_int_handler)
