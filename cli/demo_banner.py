"""What `orderbus up --demo` prints: the demo's login and, per demo device, a command that runs it as printed.

The commands are built here, in one place, so tests/e2e/test_demo_banner.py runs exactly these: each mints the
device's token through its record (`orderbus token`, cli/tokens.py) and points the agent at this bus (its MQTT
port and API), and the scale starts at its item's stock so its first reading is a whole count.
"""

from __future__ import annotations

import shlex

from config.settings import Settings
from core.demo import CREDENTIALS_FILE, DemoDevice, DemoInfo

AGENTS = {"printer": "printer --printer file:{dir}/{id}.escpos", "tablet": "kds", "scale": "scale --item {item}"}


def token_command(settings: Settings, demo: DemoInfo, device: DemoDevice) -> str:
    station = f" --station {device.station}" if device.station else ""
    return (
        f"orderbus token --data-dir {shlex.quote(str(settings.data_dir))} --sub {device.id} "
        f"--restaurant {demo.restaurant_id} --role {device.kind}{station}"
    )


def device_command(settings: Settings, demo: DemoInfo, device: DemoDevice) -> str:
    """`orderbus device …` for one demo device, its token minted inline."""
    agent = AGENTS[device.kind].format(dir=shlex.quote(str(settings.data_dir)), id=device.id, item=device.item_id)
    if device.grams is not None:
        agent += f" --grams {device.grams:g}"
    where = f"--mqtt-port {settings.mqtt_port} --api-url http://{settings.local_host}:{settings.http_port}"
    if settings.local_host != "127.0.0.1":
        where = f"--mqtt-host {settings.local_host} {where}"
    return f'orderbus device {agent} {where} --token "$({token_command(settings, demo, device)})"'


def demo_lines(settings: Settings, demo: DemoInfo) -> list[str]:
    """The demo part of the banner (rich markup in the headings), on the ports in use. The password stays in
    the credentials file (mode 0600): the printed login command reads it from there, so a banner that ends up
    in a terminal recording, a CI log or a screen share gives nobody the admin."""
    host, credentials = settings.local_host, shlex.quote(str(settings.data_dir / CREDENTIALS_FILE))
    bus = f"http://{host}:{settings.http_port}"
    lines = [
        f"[bold]demo restaurant[/bold] {demo.restaurant_id} (Demo Bistro)",
        f"  admin login   {demo.email}, password in {credentials}",
        f"  login         curl -s -X POST {bus}/api/v1/auth/login -H 'content-type: application/json' "
        f"-d @{credentials}",
        f"  MQTT token    orderbus token --data-dir {shlex.quote(str(settings.data_dir))} --sub watcher "
        f"--restaurant {demo.restaurant_id} --role staff",
        f"  in a shell    export BUS={bus} MQTT_PORT={settings.mqtt_port} WS_PORT={settings.ws_port}",
        "[bold]demo devices[/bold] (each in its own terminal; its token replaces the device's previous one)",
    ]
    lines += [f"  {device.id:<16} {device_command(settings, demo, device)}" for device in demo.devices]
    return lines
