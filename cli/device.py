"""`orderbus device printer|kds|scale`: run one device agent against a running bus (docs/devices.md)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated

import typer

device_app = typer.Typer(no_args_is_help=True, help="Run a device agent: a kitchen printer, a KDS tablet, a scale.")

Token = Annotated[
    str,
    typer.Option(
        envvar="ORDERBUS_DEVICE_TOKEN", help="The device's broker token (from POST …/devices).", show_default=False
    ),
]


def _check_hosts(value: str) -> str:
    """`--mqtt-host host[:port][,host[:port]…]` (core/endpoints.py): a bad list exits 2 before anything connects."""
    from core.endpoints import EndpointError, parse_endpoints

    try:
        parse_endpoints(value, 1883, "--mqtt-host")
    except EndpointError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


BrokerHost = Annotated[
    str,
    typer.Option(
        "--mqtt-host",
        callback=_check_hosts,
        help="Broker host, or a cluster's nodes as host[:port][,host[:port]…], tried in turn.",
    ),
]
BrokerPort = Annotated[
    int, typer.Option("--mqtt-port", help="Broker MQTT/TCP port (MQTT/TLS with --mqtt-tls-ca or --mqtt-tls).")
]
TlsCa = Annotated[
    Path | None,
    typer.Option(
        "--mqtt-tls-ca",
        help="PEM file of the CA that signed the broker's certificate: connect over TLS, verifying the broker's "
        "certificate and host name against it.",
    ),
]
Tls = Annotated[bool, typer.Option("--mqtt-tls", help="Connect over TLS, verified against the system's CAs.")]


def _tls_context(tls_ca: Path | None, tls: bool) -> ssl.SSLContext | None:
    """None for plain MQTT; a missing or non-PEM --mqtt-tls-ca exits 2 with one line naming the file."""
    from cli.errors import fail
    from core.tls import TlsCaError, client_context

    if tls_ca is None and not tls:
        return None
    try:
        return client_context(tls_ca, "--mqtt-tls-ca")
    except TlsCaError as exc:
        fail(str(exc))


ApiUrl = Annotated[
    str,
    typer.Option(
        "--api-url",
        envvar="ORDERBUS_API_URL",
        help="The bus's REST API, where the agent catches up on what MQTT did not bring (by seq).",
    ),
]
Keepalive = Annotated[
    int, typer.Option(help="MQTT keepalive in seconds; the broker declares the device lost after 1.5 times that.")
]


@device_app.command()
def printer(
    token: Token,
    printer: Annotated[str, typer.Option(help="tcp://HOST:9100, file:PATH or dummy.")],
    backup: Annotated[str | None, typer.Option(help="The backup printer, same forms as --printer.")] = None,
    state_dir: Annotated[
        Path, typer.Option(help="Where the printed-ticket journal lives (one file per device).")
    ] = Path("printer-state"),
    failover_seconds: Annotated[
        float, typer.Option(help="How long the primary may fail before the backup prints.")
    ] = 10.0,
    host: BrokerHost = "127.0.0.1",
    port: BrokerPort = 1883,
    tls_ca: TlsCa = None,
    tls: Tls = False,
    keepalive: Keepalive = 30,
    api_url: ApiUrl = "http://127.0.0.1:8000",
) -> None:
    """A kitchen printer: prints its station's tickets once each, reports printed/failed and paper status."""
    from devices.printer import run

    run(
        token=token,
        printer=printer,
        backup=backup,
        state_dir=state_dir,
        failover_seconds=failover_seconds,
        host=host,
        port=port,
        keepalive=keepalive,
        tls=_tls_context(tls_ca, tls),
        api_url=api_url,
    )


@device_app.command()
def kds(
    token: Token,
    warn_minutes: Annotated[float, typer.Option(help="Elapsed time that turns a ticket yellow.")] = 5.0,
    late_minutes: Annotated[float, typer.Option(help="Elapsed time that turns a ticket red.")] = 8.0,
    host: BrokerHost = "127.0.0.1",
    port: BrokerPort = 1883,
    tls_ca: TlsCa = None,
    tls: Tls = False,
    keepalive: Keepalive = 30,
    api_url: ApiUrl = "http://127.0.0.1:8000",
) -> None:
    """A kitchen display: open orders and live tickets, with keys to bump and recall."""
    from devices.kds import run

    run(
        token=token,
        warn_minutes=warn_minutes,
        late_minutes=late_minutes,
        host=host,
        port=port,
        keepalive=keepalive,
        tls=_tls_context(tls_ca, tls),
        api_url=api_url,
    )


@device_app.command()
def scale(
    token: Token,
    item: Annotated[int, typer.Option(help="The menu item on this scale.")],
    stdin: Annotated[bool, typer.Option("--stdin", help="Read grams from stdin, one number per line.")] = False,
    grams: Annotated[float, typer.Option(help="Simulated load cell: starting weight in grams.")] = 5000.0,
    heartbeat_seconds: Annotated[
        float | None,
        typer.Option(
            min=0.1, help="Repeat the latest reading this often; must match the bus's scale_heartbeat_seconds."
        ),
    ] = None,
    host: BrokerHost = "127.0.0.1",
    port: BrokerPort = 1883,
    tls_ca: TlsCa = None,
    tls: Tls = False,
    keepalive: Keepalive = 30,
) -> None:
    """A stock scale: publishes stable readings (simulated load cell, or stdin) and a heartbeat."""
    from devices.scale import run

    run(
        token=token,
        item=item,
        stdin=stdin,
        grams=grams,
        heartbeat_seconds=heartbeat_seconds,
        host=host,
        port=port,
        keepalive=keepalive,
        tls=_tls_context(tls_ca, tls),
    )
