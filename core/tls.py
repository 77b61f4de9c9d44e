"""TLS for the bus's own MQTT clients (the bridge's relay and ingest, the device agents): the one way to build
their SSL context and to say why a connection attempt failed.

A context verifies the broker's certificate and host name, always: against the CA bundle given (a private CA,
as in docs/deploy.md), else against the system's CAs. There is no "insecure" switch and no fallback to plain
MQTT: a broker whose certificate does not verify is not connected to, and the attempt is logged and retried.
"""

from __future__ import annotations

import ssl
import sys
from pathlib import Path


class TlsCaError(ValueError):
    """A CA bundle that cannot be used; the message is one line naming the flag and the file."""


def client_context(ca_file: Path | None, flag: str) -> ssl.SSLContext:
    """A client context that verifies the broker against `ca_file` (PEM), or the system's CAs when None."""
    if ca_file is None:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not ca_file.is_file():
        why = "is not a file" if ca_file.exists() else "does not exist"
        raise TlsCaError(f"{flag} {ca_file}: {why}; give the PEM file of the CA that signed the broker's certificate")
    try:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except ssl.SSLError as exc:  # not PEM, or PEM with no certificate in it (a key, say)
        raise TlsCaError(f"{flag} {ca_file}: no CA certificate in it (a PEM file is expected; {exc.reason})") from None
    except OSError as exc:  # unreadable: permissions
        raise TlsCaError(f"{flag} {ca_file}: cannot read it ({exc.strerror or exc})") from None


def failure_reason() -> tuple[str, str]:
    """Inside paho's `on_connect_fail` (called from the `except OSError` around its connection attempt):
    the kind of failure, `tls` (the broker's certificate or the handshake) or `network`, and one line of why."""
    exc = sys.exc_info()[1]
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or exc.reason
        return "tls", f"the broker's certificate does not verify: {why}"
    if isinstance(exc, ssl.SSLError):
        return "tls", f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return "network", exc.strerror or str(exc) or type(exc).__name__
    return "network", "connection failed"
