"""Free ports for servers that tests and scripts start on this machine."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_EPHEMERAL_LOW = _ephemeral_low()
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A port nobody listens on now, for a server the test starts a moment later.

    Taken from below the kernel's ephemeral range: a port from `bind(0)` is an ephemeral one,
    and any client connection the run opens in the meantime may take it as its source port, and
    the server's bind then fails (it did, once, in CI). Never the same port twice in a run."""
    with _handed_out_lock:
        low = max(1024, _EPHEMERAL_LOW - 12000)
        for _ in range(1000):
            port = random.randrange(low, _EPHEMERAL_LOW)
            if port in _handed_out:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port between {low} and {_EPHEMERAL_LOW}")
