"""The `orderbus` command line."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy import Engine

from cli.device import device_app
from cli.runtime import Parts, PortInUse, Runtime
from cli.simulate import simulate
from cli.status import status
from config.settings import ConfigFileError, Settings, load_settings
from core import db, logs
from core.demo import ensure_demo
from core.tokens import Audience, TokenService, load_or_create_key
from core.topics import ROLES

app = typer.Typer(no_args_is_help=True, help="orderbus: an MQTT event bus for restaurant devices.")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DataDir = Annotated[Path | None, typer.Option(help="Where the database and keys live [default: ./data].")]
ConfigFile = Annotated[Path | None, typer.Option("--config", help="A TOML file of settings (ORDERBUS_CONFIG).")]
Host = Annotated[str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")]
HttpPort = Annotated[int | None, typer.Option(help="HTTP port of the API and dashboard [default: 8000].")]
MqttPort = Annotated[int | None, typer.Option(help="MQTT over TCP [default: 1883].")]
MqttHost = Annotated[str | None, typer.Option(help="The broker's host, when it runs apart [default: --host].")]
WsPort = Annotated[int | None, typer.Option(help="MQTT over WebSocket, path /mqtt [default: 8083].")]
LogJson = Annotated[
    bool | None,
    typer.Option("--log-json", help="Log one JSON object per line (ORDERBUS_LOG_JSON).", show_default=False),
]


def _settings(config: Path | None, **flags: object) -> Settings:
    try:
        return load_settings(config, **flags)
    except (ConfigFileError, ValidationError) as exc:
        err.print(f"[red]error:[/red] bad configuration: {exc}")
        raise typer.Exit(2) from exc


def _run(settings: Settings, *, broker: bool, api: bool, bridge: bool) -> None:
    logs.configure(json_lines=settings.log_json)
    try:
        asyncio.run(_serve(settings, broker=broker, api=api, bridge=bridge))
    except PortInUse as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except db.DatabaseError as exc:
        _database_failed(settings, exc)


def _database_failed(settings: Settings, exc: db.DatabaseError) -> NoReturn:
    """One line that says what to run or which setting to change; exit 2."""
    if isinstance(exc, db.SchemaOutOfDate):
        message = exc.message(_upgrade_command(settings))
    elif isinstance(exc, db.DatabaseUnreachable):
        message = f"{exc}; check --data-dir, or --database-url / ORDERBUS_DATABASE_URL"
    else:
        message = str(exc)
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2) from None


def _upgrade_command(settings: Settings) -> str:
    words = ["orderbus", "db", "upgrade"]
    if config := os.environ.get("ORDERBUS_CONFIG"):
        words += ["--config", shlex.quote(config)]
    if settings.database_url:
        words += ["--database-url", shlex.quote(db.shown_url(settings.database_url))]
    else:
        words += ["--data-dir", shlex.quote(str(settings.data_dir))]
    return " ".join(words)


async def _serve(settings: Settings, *, broker: bool, api: bool, bridge: bool) -> None:
    # `orderbus up` owns its database and upgrades it; parts run apart share one and only check it
    parts = Parts.build(settings, upgrade=broker and api and bridge)
    runtime = Runtime(parts, broker=broker, api=api, bridge=bridge)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    try:
        _print_banner(settings, broker=broker, api=api)
        if settings.demo:
            demo = ensure_demo(parts.engine, settings.data_dir, runtime.wake_relay)
            _print_demo(settings, demo)
        # Full collections stalled the whole process ~300 ms every few orders with 1,000 WebSocket
        # clients (fan-out benchmark): keep start-up objects out of them, and make them rarer.
        gc.collect()
        gc.freeze()
        gc.set_threshold(700, 10, 100)
        console.print("Ctrl-C to stop.", style="dim")
        await stop.wait()
        console.print("stopping: finishing requests, publishing what is committed…", style="dim")
    finally:
        await runtime.stop()
    console.print("stopped.", style="dim")


def _print_banner(settings: Settings, *, broker: bool, api: bool) -> None:
    host = settings.local_host
    console.print("[bold green]orderbus is up[/bold green]")
    if api:
        console.print(f"  API docs      http://{host}:{settings.http_port}/docs")
        console.print(f"  API           http://{host}:{settings.http_port}/api/v1")
    if broker:
        console.print(f"  MQTT          mqtt://{host}:{settings.mqtt_port}")
        console.print(f"  MQTT over WS  ws://{host}:{settings.ws_port}/mqtt")
    console.print(f"  database      {settings.db_url}")


def _print_demo(settings: Settings, demo) -> None:
    console.print(f"[bold]demo restaurant[/bold] {demo.restaurant_id} (Demo Bistro)")
    console.print(f"  admin login   {demo.email} / {demo.password}")
    console.print(
        f"  login         curl -s -X POST http://{settings.local_host}:{settings.http_port}/api/v1/auth/login "
        f'-H \'content-type: application/json\' -d \'{{"email":"{demo.email}","password":"{demo.password}"}}\''
    )
    console.print(
        f"  MQTT token    orderbus token --data-dir {settings.data_dir} --sub watcher "
        f"--restaurant {demo.restaurant_id} --role staff"
    )
    console.print("[bold]demo devices[/bold] (each in its own terminal)")
    agents = {"printer": "printer --printer file:{dir}/{id}.escpos", "tablet": "kds", "scale": "scale --item {item}"}
    for device_id, kind, station, item in demo.devices:
        token = (
            f"orderbus token --data-dir {settings.data_dir} --sub {device_id} --restaurant {demo.restaurant_id} "
            f"--role {kind}{f' --station {station}' if station else ''}"
        )
        agent = agents[kind].format(dir=settings.data_dir, id=device_id, item=item)
        console.print(f'  {device_id:<16} orderbus device {agent} --port {settings.mqtt_port} --token "$({token})"')


@app.command()
def up(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    host: Host = None,
    http_port: HttpPort = None,
    mqtt_port: MqttPort = None,
    ws_port: WsPort = None,
    demo: Annotated[bool | None, typer.Option("--demo", help="Create a demo restaurant (once).")] = None,
    log_json: LogJson = None,
) -> None:
    """Run broker, API, outbox relay and device ingest in one process (SQLite by default)."""
    settings = _settings(
        config,
        data_dir=data_dir,
        host=host,
        http_port=http_port,
        mqtt_port=mqtt_port,
        ws_port=ws_port,
        demo=demo,
        log_json=log_json,
    )
    _run(settings, broker=True, api=True, bridge=True)


@app.command()
def broker(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    host: Host = None,
    mqtt_port: MqttPort = None,
    ws_port: WsPort = None,
    log_json: LogJson = None,
) -> None:
    """Run only the embedded broker."""
    _run(
        _settings(config, data_dir=data_dir, host=host, mqtt_port=mqtt_port, ws_port=ws_port, log_json=log_json),
        broker=True,
        api=False,
        bridge=False,
    )


@app.command()
def api(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    host: Host = None,
    http_port: HttpPort = None,
    mqtt_host: MqttHost = None,
    mqtt_port: Annotated[int | None, typer.Option(help="The broker's MQTT port; set, /readyz checks it.")] = None,
    log_json: LogJson = None,
) -> None:
    """Run only the HTTP API (a separate `orderbus bridge` publishes its events)."""
    settings = _settings(
        config,
        data_dir=data_dir,
        host=host,
        http_port=http_port,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        log_json=log_json,
    )
    _run(settings, broker=False, api=True, bridge=False)


@app.command()
def bridge(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    host: Host = None,
    mqtt_host: MqttHost = None,
    mqtt_port: MqttPort = None,
    log_json: LogJson = None,
) -> None:
    """Run only the outbox relay and device ingest, against the broker at --mqtt-host:--mqtt-port."""
    settings = _settings(
        config, data_dir=data_dir, host=host, mqtt_host=mqtt_host, mqtt_port=mqtt_port, log_json=log_json
    )
    _run(settings, broker=False, api=False, bridge=True)


_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    match = _TTL.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter("use a positive number with s, m, h or d, e.g. 15m or 1h")
    return int(match.group(1)) * _UNITS[match.group(2)]


@app.command()
def token(
    sub: Annotated[str, typer.Option(help="Subject: a user id, or the device id (also its MQTT client id).")],
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(sorted(ROLES))}.")],
    restaurant: Annotated[int | None, typer.Option(help="Restaurant id (not for super_admin, ops, service).")] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime, e.g. 15m, 1h, 7d.")] = "1h",
    station: Annotated[str | None, typer.Option(help="Kitchen station of a printer.")] = None,
    audience: Annotated[str, typer.Option(help="mqtt (broker) or api (REST).")] = "mqtt",
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Print a signed token (on the last line) that this data directory's broker accepts."""
    settings = _settings(config, data_dir=data_dir)
    if audience not in ("mqtt", "api"):
        raise typer.BadParameter("audience must be mqtt or api", param_hint="--audience")
    checked_audience: Audience = "mqtt" if audience == "mqtt" else "api"
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,128}", sub) or ":" in sub:
        raise typer.BadParameter("letters, digits and _ . @ - only (at most 128)", param_hint="--sub")
    key = load_or_create_key(settings.data_dir, settings.jwt_key.get_secret_value() if settings.jwt_key else None)
    try:
        signed = TokenService(key).issue(
            sub=sub,
            role=role,
            rid=restaurant,
            audience=checked_audience,
            ttl_seconds=parse_ttl(ttl),
            extra={"station": station} if station else None,
        )
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    err.print(f"{role} token for {sub}, restaurant {restaurant}, valid {ttl}; MQTT client id: {sub}[:suffix]")
    print(signed)


db_app = typer.Typer(no_args_is_help=True, help="The database schema: upgrade it, show its revision.")
DatabaseUrl = Annotated[
    str | None,
    typer.Option(help="e.g. postgresql+psycopg://user@host/db (ORDERBUS_DATABASE_URL) [default: SQLite in data dir]."),
]


def _database(data_dir: Path | None, database_url: str | None, config: Path | None) -> tuple[Settings, Engine]:
    settings = _settings(config, data_dir=data_dir, database_url=database_url)
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return settings, db.make_engine(settings.db_url)
    except db.DatabaseError as exc:
        _database_failed(settings, exc)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None, database_url: DatabaseUrl = None, config: ConfigFile = None) -> None:
    """Bring the database schema to this orderbus's revision (a database made before migrations included)."""
    settings, engine = _database(data_dir, database_url, config)
    try:
        before, after = db.upgrade(engine)
    except db.DatabaseError as exc:
        _database_failed(settings, exc)
    finally:
        engine.dispose()
    where = db.shown_url(settings.db_url)
    if before == after:
        console.print(f"{where}: schema at {after}, nothing to do")
    else:
        console.print(f"{where}: schema upgraded from {before or 'nothing'} to {after}")


@db_app.command("current")
def db_current(data_dir: DataDir = None, database_url: DatabaseUrl = None, config: ConfigFile = None) -> None:
    """Print the database's schema revision (`none` for an empty database or one made before migrations)."""
    settings, engine = _database(data_dir, database_url, config)
    try:
        revision = db.current(engine)
    except db.DatabaseError as exc:
        _database_failed(settings, exc)
    finally:
        engine.dispose()
    head = db.head()
    note = "this orderbus's schema" if revision == head else f"this orderbus needs {head}"
    print(f"{revision or 'none'} ({note})")


@db_app.command("revision")
def db_revision(message: Annotated[str, typer.Option("-m", "--message", help="What the revision changes.")]) -> None:
    """For developers, in a source checkout: write the revision that brings the schema to the models."""
    written = db.new_revision(message)
    if written is None:
        console.print("the models and the migrations agree: no revision written")
        return
    if importlib.util.find_spec("ruff") is not None:  # in a checkout with the test extras: lint-clean at once
        for ruff in (["check", "--fix", "--quiet"], ["format", "--quiet"]):
            subprocess.run([sys.executable, "-m", "ruff", *ruff, str(written)], check=False)
    console.print(f"wrote {written}: read it, then run `make lint` and the migration tests")


app.add_typer(db_app, name="db")
app.command()(status)  # `orderbus status`: the live terminal view (cli/status.py)
app.add_typer(device_app, name="device")
app.command()(simulate)  # `orderbus simulate`: the fleet simulator and load generator (cli/simulate.py)

if __name__ == "__main__":
    app()
