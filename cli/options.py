"""The options several commands share, spelled once: the same flag names the same setting everywhere
(tests/unit/test_cli_options.py), and each shows the default it falls back to.

The settings' options default to None (not given: the environment or the config file may still set
them), so typer has no default of its own to show; `show_default` names the setting's default instead."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from config.settings import Settings
from core.topics import ROLES


def setting_default(field: str) -> str:
    """What a setting is when no flag, environment variable or config file sets it."""
    return str(Settings.model_fields[field].default)


DataDir = Annotated[
    Path | None,
    typer.Option(
        help="Where the database and keys live (ORDERBUS_DATA_DIR).", show_default=setting_default("data_dir")
    ),
]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="A TOML file of settings (ORDERBUS_CONFIG).")]
Host = Annotated[
    str | None, typer.Option(help="Address to listen on (ORDERBUS_HOST).", show_default=setting_default("host"))
]
HttpPort = Annotated[
    int | None,
    typer.Option(
        help="HTTP port of the API and dashboard (ORDERBUS_HTTP_PORT).", show_default=setting_default("http_port")
    ),
]
MqttPort = Annotated[
    int | None,
    typer.Option(help="MQTT over TCP (ORDERBUS_MQTT_PORT).", show_default=setting_default("mqtt_port")),
]
MqttHost = Annotated[
    str | None,
    typer.Option(
        help="The broker's host, when it runs apart; a cluster's nodes as host[:port][,host[:port]…] "
        "(ORDERBUS_MQTT_HOST).",
        show_default="--host",
    ),
]
MqttTlsCa = Annotated[
    Path | None,
    typer.Option(
        help="PEM file of the CA that signed the broker's certificate: the bus's MQTT clients connect over TLS and "
        "verify the broker's certificate and host name against it (ORDERBUS_MQTT_TLS_CA)."
    ),
]
MqttTls = Annotated[
    bool | None,
    typer.Option(
        "--mqtt-tls",
        help="The bus's MQTT clients connect over TLS, verified against the system's CAs (ORDERBUS_MQTT_TLS).",
        show_default=False,
    ),
]
WsPort = Annotated[
    int | None,
    typer.Option(help="MQTT over WebSocket, path /mqtt (ORDERBUS_WS_PORT).", show_default=setting_default("ws_port")),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        help="e.g. postgresql+psycopg://user@host/db (ORDERBUS_DATABASE_URL).",
        show_default="sqlite:///<data-dir>/orderbus.db",
    ),
]
Broker = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="A NATS cluster instead of the embedded broker: nats://host:port[,host:port…] (ORDERBUS_BROKER_URL); "
        "with --mqtt-host/--mqtt-port of a node's MQTT listener.",
    ),
]
PublicWsUrl = Annotated[
    str | None,
    typer.Option(
        help="The MQTT-over-WebSocket URL browsers use, e.g. ws://node:9222/mqtt (ORDERBUS_PUBLIC_WS_URL).",
        show_default="ws://<page host>:<ws-port>/mqtt",
    ),
]
LogJson = Annotated[
    bool | None,
    typer.Option("--log-json", help="Log one JSON object per line (ORDERBUS_LOG_JSON).", show_default=False),
]
# the roles as choices, so that --help lists them and a misspelt one is refused before anything runs
RoleChoice = StrEnum("RoleChoice", {role: role for role in sorted(ROLES)})  # type: ignore[misc]
Role = Annotated[RoleChoice, typer.Option(help="The token's role.", show_default=False)]
