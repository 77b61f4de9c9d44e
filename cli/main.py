"""The `orderbus` command line."""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from sqlalchemy import Engine

from broker.nats import CalloutUnavailable
from cli.cluster import cluster_app
from cli.demo_banner import demo_lines
from cli.device import device_app
from cli.errors import CONFIG_ERRORS, fail, say
from cli.options import (
    Broker,
    ConfigFile,
    DatabaseUrl,
    DataDir,
    Host,
    HttpPort,
    LogJson,
    MqttHost,
    MqttPort,
    MqttTls,
    MqttTlsCa,
    PublicWsUrl,
    Role,
    WsPort,
    setting_default,
)
from cli.ports import FLAGS, Replaced, free_taken_defaults
from cli.runtime import BrokerUnreachable, Parts, PortInUse, Runtime, preflight
from cli.simulate import simulate
from cli.status import status
from cli.tokens import mint, parse_ttl
from cli.users import user_app
from config.settings import BrokerUrlError, Settings, load_settings, parse_nats_urls
from core import db, logs
from core.demo import DemoInfo, ensure_demo
from core.endpoints import EndpointError, describe
from core.tokens import Audience

app = typer.Typer(no_args_is_help=True, help="orderbus: an MQTT event bus for restaurant devices.")
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        print(f"orderbus {importlib.metadata.version('orderbus')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """orderbus: an MQTT event bus for restaurant devices."""


def _settings(config: Path | None, **flags: object) -> Settings:
    try:
        settings = load_settings(config, **flags)
        settings.mqtt_endpoints  # noqa: B018 - a bad --mqtt-host list, before anything is set up
        settings.mqtt_tls_context()  # a missing or non-PEM --mqtt-tls-ca, before anything is set up
    except CONFIG_ERRORS as exc:
        fail(str(exc))
    return settings


def _run(settings: Settings, *, broker: bool, api: bool, bridge: bool, replaced: Replaced | None = None) -> None:
    logs.configure(json_lines=settings.log_json)
    try:
        asyncio.run(_serve(settings, broker=broker, api=api, bridge=bridge, replaced=replaced or {}))
    except (PortInUse, BrokerUrlError, BrokerUnreachable, EndpointError) as exc:
        fail(str(exc))
    except CalloutUnavailable as exc:  # the responder's NATS login (broker/nats/responder.py)
        fail(f"--broker: {exc}")
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
    fail(message)


def _upgrade_command(settings: Settings) -> str:
    words = ["orderbus", "db", "upgrade"]
    if config := os.environ.get("ORDERBUS_CONFIG"):
        words += ["--config", shlex.quote(config)]
    if settings.database_url:
        words += ["--database-url", shlex.quote(db.shown_url(settings.database_url))]
    else:
        words += ["--data-dir", shlex.quote(str(settings.data_dir))]
    return " ".join(words)


async def _serve(settings: Settings, *, broker: bool, api: bool, bridge: bool, replaced: Replaced) -> None:
    preflight(settings, broker=broker, api=api)  # a taken port: one line, and the database untouched
    # `orderbus up` owns its database and upgrades it; parts run apart share one and only check it
    parts = Parts.build(settings, upgrade=broker and api and bridge)
    runtime = Runtime(parts, broker=broker, api=api, bridge=bridge)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    try:
        _print_banner(settings, broker=broker, api=api, replaced=replaced)
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


def _print_banner(settings: Settings, *, broker: bool, api: bool, replaced: Replaced) -> None:
    """Where to look, on the ports actually used; never a password (the demo's is in its credentials file)."""
    host = settings.local_host

    def note(field: str) -> str:
        if field not in replaced:
            return ""
        default, used = replaced[field]
        return f"  (port {default} is taken: --demo uses {used}; choose one with {FLAGS[field]})"

    console.print("[bold green]orderbus is up[/bold green]", highlight=False)
    if api:
        console.print(f"  dashboard     http://{host}:{settings.http_port}/{note('http_port')}", highlight=False)
        console.print(f"  ops           http://{host}:{settings.http_port}/ops.html", highlight=False)
        console.print(f"  API docs      http://{host}:{settings.http_port}/docs", highlight=False)
        console.print(f"  API           http://{host}:{settings.http_port}/api/v1", highlight=False)
    if settings.broker_url:
        console.print(
            f"  NATS cluster  {settings.broker_url} (auth-callout responder: {'here' if broker else 'apart'})"
        )
        console.print(f"  MQTT          {describe(settings.mqtt_endpoints)}", highlight=False)
    elif broker:
        console.print(f"  MQTT          mqtt://{host}:{settings.mqtt_port}{note('mqtt_port')}", highlight=False)
        console.print(f"  MQTT over WS  ws://{host}:{settings.ws_port}/mqtt{note('ws_port')}", highlight=False)
    console.print(f"  database      {db.shown_url(settings.db_url)}", highlight=False)  # never the password


def _print_demo(settings: Settings, demo: DemoInfo) -> None:
    for line in demo_lines(settings, demo):  # cli/demo_banner.py: the commands, as tests run them
        console.print(line, highlight=False)


@app.command()
def up(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    host: Host = None,
    http_port: HttpPort = None,
    mqtt_port: MqttPort = None,
    ws_port: WsPort = None,
    broker: Broker = None,
    mqtt_host: MqttHost = None,
    mqtt_tls_ca: MqttTlsCa = None,
    mqtt_tls: MqttTls = None,
    public_ws_url: PublicWsUrl = None,
    demo: Annotated[
        bool | None,
        typer.Option(
            "--demo", help="Create a demo restaurant (once); a default port that is taken is replaced by a free one."
        ),
    ] = None,
    log_json: LogJson = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run broker, API, outbox relay and device ingest in one process (SQLite by default)."""
    settings = _settings(
        config,
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        http_port=http_port,
        mqtt_port=mqtt_port,
        ws_port=ws_port,
        broker_url=broker,
        mqtt_host=mqtt_host,
        mqtt_tls_ca=mqtt_tls_ca,
        mqtt_tls=mqtt_tls,
        public_ws_url=public_ws_url,
        demo=demo,
        log_json=log_json,
    )
    replaced: Replaced = {}
    if settings.demo:  # a fresh clone's `make demo` on a laptop where Mosquitto holds 1883
        settings, replaced = free_taken_defaults(settings)
    _run(settings, broker=True, api=True, bridge=True, replaced=replaced)


@app.command()
def broker(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    host: Host = None,
    mqtt_port: MqttPort = None,
    ws_port: WsPort = None,
    log_json: LogJson = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run only the embedded broker (the database tells it which devices are revoked)."""
    flags = {"host": host, "mqtt_port": mqtt_port, "ws_port": ws_port, "log_json": log_json}
    _run(
        _settings(config, data_dir=data_dir, database_url=database_url, **flags),
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
    mqtt_tls_ca: MqttTlsCa = None,
    mqtt_tls: MqttTls = None,
    mqtt_port: Annotated[
        int | None,
        typer.Option(
            help="The broker's MQTT port; set, /readyz checks it (ORDERBUS_MQTT_PORT).",
            show_default=setting_default("mqtt_port"),
        ),
    ] = None,
    broker: Broker = None,
    public_ws_url: PublicWsUrl = None,
    log_json: LogJson = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run only the HTTP API (a separate `orderbus bridge` publishes its events)."""
    settings = _settings(
        config,
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        http_port=http_port,
        mqtt_host=mqtt_host,
        mqtt_tls_ca=mqtt_tls_ca,
        mqtt_tls=mqtt_tls,
        mqtt_port=mqtt_port,
        broker_url=broker,
        public_ws_url=public_ws_url,
        log_json=log_json,
    )
    _run(settings, broker=False, api=True, bridge=False)


@app.command()
def bridge(
    data_dir: DataDir = None,
    config: ConfigFile = None,
    host: Host = None,
    mqtt_host: MqttHost = None,
    mqtt_tls_ca: MqttTlsCa = None,
    mqtt_tls: MqttTls = None,
    mqtt_port: MqttPort = None,
    broker: Broker = None,
    log_json: LogJson = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Run only the outbox relay and device ingest, against the broker at --mqtt-host:--mqtt-port.

    Several may run for availability: one holds the bridge lease and is active, the others stand by
    (docs/ops.md, "Several bridges")."""
    settings = _settings(
        config,
        data_dir=data_dir,
        database_url=database_url,
        host=host,
        mqtt_host=mqtt_host,
        mqtt_tls_ca=mqtt_tls_ca,
        mqtt_tls=mqtt_tls,
        mqtt_port=mqtt_port,
        broker_url=broker,
        log_json=log_json,
    )
    _run(settings, broker=False, api=False, bridge=True)


@app.command()
def token(
    sub: Annotated[str, typer.Option(help="Subject: a user id, or the device id (also its MQTT client id).")],
    role: Role,
    restaurant: Annotated[int | None, typer.Option(help="Restaurant id (not for super_admin, ops, service).")] = None,
    ttl: Annotated[str, typer.Option(help="Lifetime, e.g. 15m, 1h, 7d.")] = "1h",
    station: Annotated[str | None, typer.Option(help="Kitchen station of a printer.")] = None,
    audience: Annotated[str, typer.Option(help="mqtt (broker) or api (REST).")] = "mqtt",
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Print a signed token (on the last line) that this data directory's broker accepts.

    A registered device's token is re-issued through its record (cli/tokens.py): its previous one stops working."""
    settings = _settings(config, data_dir=data_dir)
    if audience not in ("mqtt", "api"):
        raise typer.BadParameter("audience must be mqtt or api", param_hint="--audience")
    checked_audience: Audience = "mqtt" if audience == "mqtt" else "api"
    if not re.fullmatch(r"[A-Za-z0-9_.:@-]{1,128}", sub) or ":" in sub:
        raise typer.BadParameter("letters, digits and _ . @ - only (at most 128)", param_hint="--sub")
    try:
        ttl_seconds = parse_ttl(ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ttl") from None
    try:
        minted = mint(
            settings,
            sub=sub,
            role=role,
            restaurant=restaurant,
            ttl_seconds=ttl_seconds,
            station=station,
            audience=checked_audience,
        )
    except ValueError as exc:  # TokenRefused, or the signer's own refusal
        fail(str(exc))
    except db.DatabaseError as exc:
        _database_failed(settings, exc)
    err.print(minted.note, highlight=False)
    print(minted.token)


db_app = typer.Typer(no_args_is_help=True, help="The database schema: upgrade it, show its revision.")


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


@app.command()
def responder(
    broker_url: Broker = None,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config", help="Print the accounts/authorization block every node's config needs, and exit."
        ),
    ] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    config: ConfigFile = None,
    log_json: LogJson = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Requests decided at once (threads when more than 1). For more throughput run more "
            "responders, one per node (they share a queue group): see docs/deploy.md.",
        ),
    ] = 1,
) -> None:
    """Run the NATS auth-callout responder: our tokens and ACL policy for the cluster's MQTT clients."""
    try:
        from broker.nats.callout import Credentials, authorization_block
        from cli.callout import serve
    except ImportError as exc:  # nats-py, nkeys: the `nats` extra
        fail(f"{exc}; install the NATS extra: pip install 'orderbus[nats]'")

    settings = _settings(config, data_dir=data_dir, database_url=database_url, log_json=log_json, broker_url=broker_url)
    if print_config:  # the issuer key and the responder's login, made once in the data directory
        credentials = Credentials.load_or_create(settings.data_dir)
        print(authorization_block(credentials.issuer_public_key, credentials.auth_user, credentials.auth_password))
        return
    try:
        urls = parse_nats_urls(settings.broker_url or "")
    except BrokerUrlError as exc:
        fail(f"no cluster to serve: {exc}")
    logs.configure(json_lines=settings.log_json)
    try:
        asyncio.run(serve(settings, urls, workers=workers))
    except CalloutUnavailable as exc:
        fail(str(exc))
    except db.DatabaseError as exc:
        _database_failed(settings, exc)


app.add_typer(db_app, name="db")
app.command()(status)  # `orderbus status`: the live terminal view (cli/status.py)
app.add_typer(device_app, name="device")
app.add_typer(cluster_app, name="cluster")  # `orderbus cluster up|status`: a local NATS cluster
app.command()(simulate)  # `orderbus simulate`: the fleet simulator and load generator (cli/simulate.py)
app.add_typer(user_app, name="user")  # `orderbus user create|list`: accounts by hand (cli/users.py)


def main() -> None:
    """The `orderbus` console script: the app, with every error it reports in one style (cli/errors.py).

    Usage errors (a bad flag value, an unknown option) and our configuration errors that surface anywhere
    (a bad ACL file found while the parts are built) become one `orderbus: error:` line, exit 2."""
    try:
        code = app(standalone_mode=False)
    except _CLICK_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `orderbus` or `orderbus db` alone: the help
            exc.show()
            sys.exit(exc.exit_code)
        context = getattr(exc, "ctx", None)
        where = f"{context.command_path}: " if context is not None else ""
        say(f"{where}{exc.format_message()}".replace("\n", " "))
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except CONFIG_ERRORS as exc:
        say(str(exc))
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


# the click that typer runs on (its own copy since typer 0.2x), through the one class of it typer exports
_CLICK_ERROR: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


if __name__ == "__main__":
    main()
