"""`orderbus device printer|kds|scale`: run one device agent against a running bus (docs/devices.md)."""

from __future__ import annotations

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
BrokerHost = Annotated[str, typer.Option("--host", help="Broker host.")]
BrokerPort = Annotated[int, typer.Option("--port", help="Broker MQTT/TCP port.")]
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
        api_url=api_url,
    )


@device_app.command()
def kds(
    token: Token,
    warn_minutes: Annotated[float, typer.Option(help="Elapsed time that turns a ticket yellow.")] = 5.0,
    late_minutes: Annotated[float, typer.Option(help="Elapsed time that turns a ticket red.")] = 8.0,
    host: BrokerHost = "127.0.0.1",
    port: BrokerPort = 1883,
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
    )
