"""Where ticket bytes go and how a printer says it is fine: raw TCP 9100, a file, or a dummy.

python-escpos sends well, but its status calls are not enough for a kitchen: over `Network`,
`_read()` is one `recv(16)` (no framing, a stale answer is taken for the current one, and a
silent printer blocks for the whole socket timeout, 60 s by default), `paper_status()` says
"paper adequate" when the printer does not answer at all, and nothing reads cover-open or error
state. So the status here is our own `DLE EOT n` exchange: one byte per query, checked against
the bits Epson fixes in every status byte, with a short timeout.

Every printer answers the same three calls: `status()`, `send(data)` and `confirm()`; `close()`
ends one print or poll (a connection is opened per job: port 9100 serves one client at a time
and a printer may drop idle connections).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

from escpos.printer import Dummy, File, Network

DLE_EOT = b"\x10\x04"
PROCESS_ID_HEADER = b"\x37\x22"  # the reply to GS ( H fn 48


@dataclass(frozen=True)
class PrinterStatus:
    online: bool
    paper: str = "ok"  # ok | near_end | out
    cover_open: bool = False
    error: bool = False

    @property
    def problem(self) -> tuple[str, str] | None:
        """(reason, detail) as `failed` reports them, or None when it can print."""
        if self.cover_open:
            return "cover_open", "cover open"
        if self.paper == "out":
            return "paper_out", "paper out"
        if self.error:
            return "error", "printer error (cutter jam or mechanical fault)"
        if not self.online:
            return "offline", "printer offline"
        return None

    def event(self) -> dict[str, Any]:
        """The fields of docs/devices.md's `printer_status` (without `type` and `ts`)."""
        return {"online": self.online, "paper": self.paper, "cover_open": self.cover_open, "error": self.error}


class PrinterDown(Exception):
    """The printer cannot print now; `reason` is one of `failed`'s reasons."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Printer(Protocol):
    name: str  # for logs: the URL it was given

    def status(self) -> PrinterStatus:
        """Its state now; raises PrinterDown when it cannot be reached."""
        ...

    def send(self, data: bytes) -> None:
        """Hand the bytes over; raises PrinterDown if that fails (some may have gone through)."""
        ...

    def confirm(self) -> bool:
        """True if the printer confirmed it printed everything sent; False if it cannot tell."""
        ...

    def close(self) -> None: ...


def decode_status(online: int, offline_cause: int, error_cause: int, paper: int) -> PrinterStatus:
    """The four answers to DLE EOT 1, 2, 3 and 4 (Epson ESC/POS), as a status."""
    if paper & 0x60:
        paper_state = "out"
    elif paper & 0x0C:
        paper_state = "near_end"
    else:
        paper_state = "ok"
    return PrinterStatus(
        online=not online & 0x08,
        paper=paper_state,
        cover_open=bool(offline_cause & 0x04),
        error=bool(offline_cause & 0x40) or bool(error_cause & 0x68),
    )


def is_status_byte(value: int) -> bool:
    """Epson fixes bits 1 and 4 to 1 and bits 0 and 7 to 0 in every real-time status byte."""
    return value & 0x93 == 0x12


class TcpPrinter(Network):
    """An Epson-compatible printer on raw TCP (port 9100)."""

    _device: socket.socket | Literal[False] | None  # escpos's slot: False until opened and after a close

    def __init__(self, host: str, port: int = 9100, *, timeout: float = 3.0, confirm_timeout: float = 15.0) -> None:
        super().__init__(host=host, port=port, timeout=timeout)
        self.name = f"tcp://{host}:{port}"
        self.confirm_timeout = confirm_timeout
        self.confirms: bool | None = None  # learned: does it answer GS ( H? None until the first try
        self._process_id = 0

    def status(self) -> PrinterStatus:
        sock = self._socket()
        try:
            _drain(sock)
            answers = [self._query(sock, n) for n in (1, 2, 3, 4)]
        except OSError as exc:
            self.close()
            raise PrinterDown("offline", f"{self.name}: no status answer ({exc})") from exc
        return decode_status(*answers)

    def send(self, data: bytes) -> None:
        try:
            sock = self._socket()
            sock.settimeout(self.timeout)  # a printer that stops reading (buffer full) must not hang the agent
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise PrinterDown("offline", f"{self.name}: sending failed ({exc})") from exc

    def confirm(self) -> bool:
        """Epson `GS ( H` fn 48: the printer answers with our process id once everything before it is printed."""
        if self.confirms is False:
            return False
        self._process_id = (self._process_id + 1) % 10_000
        ident = f"{self._process_id:04d}".encode()
        sock = self._socket()
        try:
            sock.settimeout(self.timeout)
            sock.sendall(b"\x1d(H\x06\x00\x30\x30" + ident)
            reply = _read_until(sock, PROCESS_ID_HEADER + ident + b"\x00", self.confirm_timeout)
        except OSError as exc:
            self.close()
            raise PrinterDown("offline", f"{self.name}: connection lost waiting for the print ({exc})") from exc
        if reply:
            self.confirms = True
            return True
        problem = self.status().problem
        if problem is not None:  # it stopped half-way (paper ran out): not proof that it cannot confirm
            raise PrinterDown(problem[0], f"{problem[1]} while printing")
        if self.confirms is None:
            self.confirms = False  # fine, yet silent: it does not know the command; do not wait for it again
        return False

    def open(self, raise_not_found: bool = True) -> None:
        """Network.open, without its log line on every connection (one per poll here)."""
        self.close()
        try:
            self._device = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            self._device = False
            raise PrinterDown("offline", f"{self.name}: cannot connect ({exc})") from exc

    def close(self) -> None:
        device, self._device = self._device, False
        if isinstance(device, socket.socket):
            with contextlib.suppress(OSError):
                device.shutdown(socket.SHUT_RDWR)
            device.close()

    def _socket(self) -> socket.socket:
        if not isinstance(self._device, socket.socket):
            self.open()
        assert isinstance(self._device, socket.socket)
        return self._device

    def _query(self, sock: socket.socket, n: int) -> int:
        sock.sendall(DLE_EOT + bytes([n]))
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer to DLE EOT {n}")
            sock.settimeout(remaining)
            chunk = sock.recv(1)
            if not chunk:
                raise ConnectionError("the printer closed the connection")
            if is_status_byte(chunk[0]):
                return chunk[0]
            # anything else is not the answer (noise, or a late reply to an earlier request): skip it


class FilePrinter(File):
    """A device file (/dev/usb/lp0) or a plain file; appended to, never truncated. It cannot report paper."""

    device: BinaryIO | None  # escpos's property over its slot: None when the file could not be opened

    def __init__(self, path: Path) -> None:
        super().__init__(devfile=str(path))
        self.name = f"file:{path}"

    def open(self, raise_not_found: bool = True) -> None:
        try:
            self.device = open(self.devfile, "ab")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            self.device = None
            raise PrinterDown("offline", f"{self.name}: {exc}") from exc

    def status(self) -> PrinterStatus:
        if not self._device:
            self.open()
        return PrinterStatus(online=True)

    def send(self, data: bytes) -> None:
        if not self._device:
            self.open()
        try:
            self._raw(data)
            device = self._device
            if device and hasattr(device, "fileno"):
                with contextlib.suppress(OSError):  # a character device may not sync: flushed is all it gets
                    os.fsync(device.fileno())
        except OSError as exc:
            self.close()
            raise PrinterDown("error", f"{self.name}: {exc}") from exc

    def confirm(self) -> bool:
        return False


class DummyPrinter(Dummy):
    """Keeps what it prints; its state is set by hand (tests, demos): python-escpos's Dummy cannot fake status."""

    def __init__(self, name: str = "dummy") -> None:
        super().__init__()
        self.name = name
        self.state = PrinterStatus(online=True)
        self.reachable = True
        self.jobs: list[bytes] = []
        self.keep = 1000

    def status(self) -> PrinterStatus:
        if not self.reachable:
            raise PrinterDown("offline", f"{self.name}: unreachable")
        return self.state

    def send(self, data: bytes) -> None:
        if not self.reachable or self.state.problem is not None:
            raise PrinterDown(*(self.state.problem or ("offline", "unreachable")))
        self._raw(data)
        self.jobs.append(data)
        del self.jobs[: -self.keep]  # a demo runs for days: keep the latest only
        del self._output_list[: -self.keep]

    def confirm(self) -> bool:
        return True


def open_printer(url: str) -> Printer:
    """`tcp://HOST:PORT` (port 9100 by default), `file:PATH` or `dummy`; ValueError for anything else."""
    if url == "dummy":
        return DummyPrinter()
    if url.startswith("file:"):
        path = url.removeprefix("file:").removeprefix("//")
        if not path:
            raise ValueError("file: needs a path, as in file:/dev/usb/lp0")
        return FilePrinter(Path(path))
    if url.startswith("tcp://"):
        host, _, port_text = url.removeprefix("tcp://").rstrip("/").rpartition(":")
        if not host:
            host, port_text = port_text, "9100"
        if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{url!r} is not tcp://HOST:PORT")
        return TcpPrinter(host.strip("[]"), int(port_text))
    raise ValueError(f"{url!r}: a printer is tcp://HOST:9100, file:PATH or dummy")


def _drain(sock: socket.socket) -> None:
    """Drop anything unread (a reply that came too late last time) so it is not taken for this answer."""
    sock.setblocking(False)
    try:
        while sock.recv(256):
            pass
    except (BlockingIOError, InterruptedError):
        pass
    finally:
        sock.setblocking(True)


def _read_until(sock: socket.socket, expected: bytes, timeout: float) -> bool:
    """Whether `expected` arrives within `timeout`; status bytes or other noise before it are skipped."""
    deadline = time.monotonic() + timeout
    seen = b""
    while expected not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(64)
        except TimeoutError:
            return False
        if not chunk:
            raise ConnectionError("the printer closed the connection")
        seen = (seen + chunk)[-64:]
    return True
