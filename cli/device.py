"""`orderbus device printer|kds|scale`: run one device agent against a running bus (docs/devices.md)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from cli.options import setting_default

device_app = typer.Typer(no_args_is_help=True, help="Run a device agent: a kitchen printer, a KDS tablet, a scale.")

Token = Annotated[
    str,
    typer.Option(
        envvar="ORDERBUS_DEVICE_TOKEN", help="The device's broker token (from POST …/devices).", show_default=False
    ),
]


def _check_hosts(value: str | None) -> str | None:
    """`--mqtt-host host[:port][,host[:port]…]` (core/endpoints.py): a bad list exits 2 before anything connects."""
    from core.endpoints import EndpointError, parse_endpoints

    if value is None:
        return None
    try:
        parse_endpoints(value, 1883, "--mqtt-host")
    except EndpointError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


# The broker's address comes from the same settings as the server's (config/settings.py: these flags, then
# ORDERBUS_MQTT_HOST / _MQTT_PORT / _MQTT_TLS / _MQTT_TLS_CA, then the --config file), so an agent started beside
# `orderbus up --config F` finds the bus, not whatever else holds port 1883. The flags are spelt as in every other
# command (`--mqtt-*`); `--tls` and `--cafile`, as mosquitto_sub names them, are aliases.
MqttHost = Annotated[
    str | None,
    typer.Option(
        "--mqtt-host",
        callback=_check_hosts,
        help="Broker host, or a cluster's nodes as host[:port][,host[:port]…], tried in turn (default: the "
        "settings' mqtt_host, else 127.0.0.1).",
        show_default=False,
    ),
]
MqttPort = Annotated[
    int | None,
    typer.Option(
        "--mqtt-port",
        help="Broker MQTT port (MQTT/TLS with --mqtt-tls or --mqtt-tls-ca), else the settings' (ORDERBUS_MQTT_PORT).",
        show_default=setting_default("mqtt_port"),
    ),
]
Cafile = Annotated[
    Path | None,
    typer.Option(
        "--mqtt-tls-ca",
        "--cafile",
        help="PEM file of the CA that signed the broker's certificate: connect over TLS, verifying the broker's "
        "certificate and host name against it (ORDERBUS_MQTT_TLS_CA).",
        show_default=False,
    ),
]
Tls = Annotated[
    bool | None,
    typer.Option(
        "--mqtt-tls",
        "--tls",
        help="Connect over TLS (the mqtts listener), verified against the system's CAs or --mqtt-tls-ca.",
        show_default=False,
    ),
]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="The bus's TOML settings file (ORDERBUS_CONFIG).")]
ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api-url",
        envvar="ORDERBUS_API_URL",
        help="The bus's REST API: catch-up by seq, and why the broker refuses this device (default: "
        "http://<host>:<http_port> of the settings).",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class Bus:
    """Where an agent finds the bus: the broker (host list, port, TLS) and the API."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    api_url: str


def bus_from_settings(
    config: Path | None,
    mqtt_host: str | None,
    mqtt_port: int | None,
    tls: bool | None,
    cafile: Path | None,
    api_url: str | None = None,
) -> Bus:
    """The bus as the server's settings describe it, the flags first; a bad setting exits 2 with one line."""
    from cli.errors import CONFIG_ERRORS, fail
    from config.settings import load_settings
    from core.tls import client_context

    try:
        settings = load_settings(config, mqtt_host=mqtt_host, mqtt_port=mqtt_port, mqtt_tls=tls, mqtt_tls_ca=cafile)
        context = None
        if settings.mqtt_tls or settings.mqtt_tls_ca is not None:
            context = client_context(settings.mqtt_tls_ca, "--mqtt-tls-ca")
    except CONFIG_ERRORS as exc:
        fail(str(exc))
    host = settings.mqtt_host or settings.local_host
    return Bus(host, settings.mqtt_port, context, api_url or f"http://{settings.local_host}:{settings.http_port}")


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
    mqtt_host: MqttHost = None,
    mqtt_port: MqttPort = None,
    tls: Tls = None,
    cafile: Cafile = None,
    config: ConfigFile = None,
    keepalive: Keepalive = 30,
    api_url: ApiUrl = None,
) -> None:
    """A kitchen printer: prints its station's tickets once each, reports printed/failed and paper status."""
    from devices.printer import run

    bus = bus_from_settings(config, mqtt_host, mqtt_port, tls, cafile, api_url)

    run(
        token=token,
        printer=printer,
        backup=backup,
        state_dir=state_dir,
        failover_seconds=failover_seconds,
        host=bus.host,
        port=bus.port,
        keepalive=keepalive,
        tls=bus.tls,
        api_url=bus.api_url,
    )


@device_app.command()
def kds(
    token: Token,
    warn_minutes: Annotated[float, typer.Option(help="Elapsed time that turns a ticket yellow.")] = 5.0,
    late_minutes: Annotated[float, typer.Option(help="Elapsed time that turns a ticket red.")] = 8.0,
    mqtt_host: MqttHost = None,
    mqtt_port: MqttPort = None,
    tls: Tls = None,
    cafile: Cafile = None,
    config: ConfigFile = None,
    keepalive: Keepalive = 30,
    api_url: ApiUrl = None,
) -> None:
    """A kitchen display: open orders and live tickets, with keys to bump and recall."""
    from devices.kds import run

    bus = bus_from_settings(config, mqtt_host, mqtt_port, tls, cafile, api_url)

    run(
        token=token,
        warn_minutes=warn_minutes,
        late_minutes=late_minutes,
        host=bus.host,
        port=bus.port,
        keepalive=keepalive,
        tls=bus.tls,
        api_url=bus.api_url,
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
    mqtt_host: MqttHost = None,
    mqtt_port: MqttPort = None,
    tls: Tls = None,
    cafile: Cafile = None,
    config: ConfigFile = None,
    keepalive: Keepalive = 30,
    api_url: ApiUrl = None,
) -> None:
    """A stock scale: publishes stable readings (simulated load cell, or stdin) and a heartbeat."""
    from devices.scale import run

    bus = bus_from_settings(config, mqtt_host, mqtt_port, tls, cafile, api_url)

    run(
        token=token,
        item=item,
        stdin=stdin,
        grams=grams,
        heartbeat_seconds=heartbeat_seconds,
        host=bus.host,
        port=bus.port,
        keepalive=keepalive,
        tls=bus.tls,
        api_url=bus.api_url,
    )
