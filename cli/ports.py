"""`orderbus up --demo` where a default port is taken (Mosquitto holds 1883 on most IoT developers'
laptops): that default is replaced by a free port, and the banner says which. A port someone chose (a flag,
ORDERBUS_*_PORT, the config file) is never replaced: it still fails with one line (runtime.check_ports)."""

from __future__ import annotations

import socket

from cli.runtime import bind_error
from config.settings import Settings

# setting -> (the taken default, the free port used instead)
Replaced = dict[str, tuple[int, int]]

FLAGS = {"http_port": "--http-port", "mqtt_port": "--mqtt-port", "ws_port": "--ws-port"}


def free_taken_defaults(settings: Settings) -> tuple[Settings, Replaced]:
    """`settings` with each taken default port replaced by a free one, and what was replaced."""
    fields = ["http_port"] if settings.broker_url else list(FLAGS)  # on NATS the cluster's nodes listen for MQTT
    taken = [
        f for f in fields if f not in settings.model_fields_set and bind_error(settings.host, getattr(settings, f))
    ]
    if not taken:
        return settings, {}
    holders = []
    try:  # held together until all are chosen, so no two of them get the same port
        for _ in taken:
            holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            holders.append(holder)
            holder.bind((settings.host, 0))
        replaced = {f: (getattr(settings, f), h.getsockname()[1]) for f, h in zip(taken, holders, strict=True)}
    finally:
        for holder in holders:
            holder.close()
    return settings.model_copy(update={f: port for f, (_, port) in replaced.items()}), replaced
