"""One style for every error the CLI reports: `orderbus: error: <where>: <what is wrong>` on stderr, exit 2.

A bad config or ACL file used to end in a 90 to 180-line traceback, a taken port in a Rich panel: whoever runs
orderbus needs the file (or flag) and the problem, on one line that a script can grep."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer

from broker.policy import PolicyError
from config.settings import ConfigError
from core.db import DatabaseError
from core.endpoints import EndpointError
from core.tls import TlsCaError

PREFIX = "orderbus: error: "

# what a user fixes in a setting, a file or the environment: one line each, never a traceback (cli/main.py:main)
CONFIG_ERRORS: tuple[type[Exception], ...] = (ConfigError, PolicyError, DatabaseError, EndpointError, TlsCaError)


def say(message: str) -> None:
    """Print `message` in the one style: a line per line of it (a ValidationError gives one per field)."""
    for line in str(message).splitlines() or [""]:
        sys.stderr.write(f"{PREFIX}{line}\n")
    sys.stderr.flush()


def fail(message: str) -> NoReturn:
    say(message)
    raise typer.Exit(2)
