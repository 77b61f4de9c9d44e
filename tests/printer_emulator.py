"""A kitchen printer on raw TCP, as far as the agent can tell: the one part of the loop tests cannot have for real.

It speaks enough ESC/POS: answers `DLE EOT 1/2/3/4` with Epson's status bytes (offline, cover
open, error, paper near end / out), answers `GS ( H` fn 48 with the process id once everything
before it has "printed", and cuts the paper at `GS V`: each cut piece is one entry in
`tickets`. While it cannot print (offline, paper out, cover open) print data is lost, as on a
printer whose buffer is cleared, and a `GS ( H` gets no answer. `stop()` closes the listening
socket (connections are refused), `start()` opens it again on the same port.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field

DLE_EOT = b"\x10\x04"
GS_PAREN_H = b"\x1d(H"
GS_V = b"\x1dV"


@dataclass
class PrinterEmulator:
    port: int = 0
    online: bool = True
    paper: str = "ok"  # ok | near_end | out
    cover_open: bool = False
    error: bool = False
    confirms: bool = True  # answers GS ( H fn 48
    tickets: list[bytes] = field(default_factory=list)
    lost: bytearray = field(default_factory=bytearray)
    status_queries: int = 0
    connections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._job = bytearray()

    # --- control --------------------------------------------------------------------------------

    def start(self) -> PrinterEmulator:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(8)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop accepting connections (they are refused); open ones are closed too."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(): close() alone leaves it listening
            listener.close()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def ready(self) -> bool:
        return self.online and self.paper != "out" and not self.cover_open and not self.error

    def texts(self) -> list[str]:
        """The printed tickets as text, commands removed (for asserting on what a cook would read)."""
        with self._lock:
            return [ticket_text(ticket) for ticket in self.tickets]

    # --- the printer ------------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, listener), daemon=True).start()

    def _serve(self, conn: socket.socket, listener: socket.socket) -> None:
        buffer = bytearray()
        conn.settimeout(0.2)
        with conn:
            while self._listener is listener:
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                buffer.extend(chunk)
                for reply in self._consume(buffer):
                    conn.sendall(reply)

    def _consume(self, buffer: bytearray) -> list[bytes]:
        """Take every complete command out of `buffer`; print data goes to the current job."""
        replies = []
        with self._lock:
            while buffer:
                if buffer[:2] == DLE_EOT:
                    if len(buffer) < 3:
                        break
                    replies.append(bytes([self._status_byte(buffer[2])]))
                    self.status_queries += 1
                    del buffer[:3]
                elif buffer[:3] == GS_PAREN_H:
                    if len(buffer) < 5 or len(buffer) < 5 + buffer[3] + 256 * buffer[4]:
                        break
                    size = 5 + buffer[3] + 256 * buffer[4]
                    args = bytes(buffer[5:size])
                    del buffer[:size]
                    if args[:2] == b"\x30\x30" and self.confirms and self.ready:
                        replies.append(b"\x37\x22" + args[2:6] + b"\x00")
                elif buffer[:2] == GS_V:
                    size = 4 if len(buffer) > 2 and buffer[2] in (65, 66) else 3
                    if len(buffer) < size:
                        break
                    self._print(bytes(buffer[:size]))
                    del buffer[:size]
                    if self.ready:
                        self.tickets.append(bytes(self._job))
                    self._job.clear()
                elif buffer[:1] in (b"\x10", b"\x1d") and len(buffer) < 3 and (DLE_EOT + GS_PAREN_H).find(buffer) >= 0:
                    break  # the start of a command looked for: wait for the rest
                else:
                    special = [i for i in (buffer.find(b"\x10", 1), buffer.find(b"\x1d", 1)) if i > 0]
                    end = min(special, default=len(buffer))
                    self._print(bytes(buffer[:end]))
                    del buffer[:end]
        return replies

    def _print(self, data: bytes) -> None:
        if self.ready:
            self._job.extend(data)
        else:
            self.lost.extend(data)

    def _status_byte(self, n: int) -> int:
        """Epson's real-time status: bits 1 and 4 always set."""
        value = 0x12
        if n == 1 and not self.ready:
            value |= 0x08  # offline (cover open and paper end put it offline too)
        elif n == 2:
            value |= (0x04 if self.cover_open else 0) | (0x20 if self.paper == "out" else 0)
            value |= 0x40 if self.error else 0
        elif n == 3:
            value |= 0x08 if self.error else 0  # autocutter error
        elif n == 4:
            value |= {"ok": 0, "near_end": 0x0C, "out": 0x6C}[self.paper]
        return value


def ticket_text(data: bytes) -> str:
    """ESC/POS → the readable text: commands (with their one argument byte) dropped."""
    text = re.sub(rb"\x1b[!EatdM].|\x1b@|\x1d[!BV].", b"", data, flags=re.DOTALL)
    return text.decode("cp437")


REFERENCE = re.compile(r"\border (\d+) ticket \d+$")


def printed_order_ids(texts: list[str]) -> list[int]:
    """The order ids on the paper, in the order they came out (the reference line under the header; the
    big "ORDER #n" is the restaurant's own number, which the kitchen calls out)."""
    return [int(m.group(1)) for text in texts for line in text.splitlines() if (m := REFERENCE.search(line))]
