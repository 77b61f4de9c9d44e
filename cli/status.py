"""`orderbus status`: a live terminal view of a running orderbus, from its `/metrics`.

It scrapes the Prometheus text of the process at `--url` (the API's base URL, or a full `/metrics`
URL such as a broker's `metrics_port`), parses it with prometheus-client's own parser, and shows the
same figures as the ops page. Rates are computed between two scrapes.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from api.summary import summarize
from cli.errors import say
from core.topics import PRESENCE_STATES

DEFAULT_URL = "http://127.0.0.1:8000"
LAG_WARN_SECONDS, LAG_BAD_SECONDS = 5.0, 30.0


class ScrapeError(RuntimeError):
    """The metrics could not be fetched or read; the message is one line for a person."""


def metrics_url(url: str) -> str:
    """The /metrics URL for what the user typed: a base URL gets `/metrics` appended."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parsed = httpx.URL(text)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ScrapeError(f"not a usable URL: {url} ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise ScrapeError(f"not an http(s) URL: {url}")
    if not parsed.host:
        raise ScrapeError(f"not a usable URL: {url} (no host)")
    if not parsed.path.rstrip("/").endswith("/metrics"):
        parsed = parsed.copy_with(path=parsed.path.rstrip("/") + "/metrics", fragment=None)
    return str(parsed)


def scrape(url: str, timeout: float = 5.0) -> dict[str, Any]:
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
    except httpx.InvalidURL as exc:
        raise ScrapeError(f"not a usable URL: {url} ({exc})") from None
    except httpx.UnsupportedProtocol:
        raise ScrapeError(f"not an http(s) URL: {url}") from None
    except httpx.TimeoutException:
        raise ScrapeError(f"cannot reach {url}: no answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ScrapeError(f"cannot reach {url}: {reason}") from None
    if response.status_code != 200:
        raise ScrapeError(f"{url} answered HTTP {response.status_code}; is this an orderbus API or metrics port?")
    try:
        families = list(text_string_to_metric_families(response.text))
    except Exception as exc:
        raise ScrapeError(f"{url} did not return Prometheus metrics ({type(exc).__name__})") from None
    if not any(family.name.startswith("orderbus_") for family in families):
        raise ScrapeError(f"{url} has no orderbus metrics; is this an orderbus process?")
    return summarize(families)


def _rate(now: dict[str, Any], before: dict[str, Any] | None, *path: str) -> str:
    if before is None:
        return "n/a"
    elapsed = now["time"] - before["time"]
    if elapsed <= 0:
        return "n/a"
    a: Any = now
    b: Any = before
    for key in path:
        a, b = a[key], b[key]
    return f"{max(0.0, (a - b) / elapsed):,.1f}/s"


def _pairs(values: dict[str, int]) -> str:
    shown = {k: v for k, v in values.items() if v}
    return ", ".join(f"{k} {v:,}" for k, v in shown.items()) if shown else "none"


def _up(flag: bool | None) -> Text:
    if flag is None:
        return Text("not in this process", style="dim")
    return Text("up", style="green") if flag else Text("DOWN", style="bold red")


def render(
    url: str,
    now: dict[str, Any],
    before: dict[str, Any] | None,
    problem: str | None = None,
    clients: list[dict[str, Any]] | str | None = None,
) -> Group:
    stamp = time.strftime("%H:%M:%S", time.localtime(now["time"]))
    header = Text.assemble(("orderbus status", "bold"), f"  {url}  {stamp}")
    parts: list[Any] = [header]
    if problem:  # the figures below are the last good read: say so, and how old they are
        age = max(0.0, time.time() - now["time"])
        parts.append(
            Text(
                f"STALE: figures from {stamp} ({age:,.0f} s ago); the server stopped answering: {problem}",
                style="bold red",
            )
        )

    overview = Table(show_header=False, box=None, pad_edge=False)
    overview.add_column(style="bold")
    overview.add_column()
    overview.add_row("broker", _up(now["broker_up"]))
    overview.add_row("database", _up(now["database_up"]))
    connections = now["connections"]
    overview.add_row("connections", f"{connections['total']:,}  ({_pairs(connections['by_role'])})")
    overview.add_row("listeners", _pairs(connections["by_listener"]))
    overview.add_row("connects", f"{now['connects']:,}   disconnects {now['disconnects']:,}")
    messages = now["messages"]
    overview.add_row(
        "messages in",
        f"{messages['received']:,}  ({_rate(now, before, 'messages', 'received')}), {messages['bytes_received']:,} B",
    )
    overview.add_row(
        "messages out",
        f"{messages['sent']:,}  ({_rate(now, before, 'messages', 'sent')}), {messages['bytes_sent']:,} B",
    )
    overview.add_row("retained", f"{now['retained']:,}   deepest client queue {now['deepest_queue']:,}")
    outbox = now["outbox"]
    age = outbox["oldest_age_seconds"]
    lag_style = "bold red" if age > LAG_BAD_SECONDS else "yellow" if age > LAG_WARN_SECONDS else "green"
    overview.add_row("outbox", Text.assemble(f"{outbox['pending']:,} pending, oldest ", (f"{age:,.1f} s", lag_style)))
    relay = now["relay"]
    mean = relay["mean_publish_seconds"]
    overview.add_row(
        "relay",
        f"{relay['published']:,} events published"
        + (f", mean publish→PUBACK {mean * 1000:,.1f} ms" if mean is not None else ""),
    )
    overview.add_row("auth failures", _pairs(now["auth_failures"]))
    overview.add_row("ACL denials", _pairs(now["acl_denials"]))
    overview.add_row("dropped", _pairs(now["dropped"]))
    ingest = now["ingest"]
    overview.add_row("ingest", f"{ingest['processed']:,} processed, rejected: {_pairs(ingest['rejected'])}")
    overview.add_row("tickets", _pairs(now["tickets"]) if any(now["tickets"].values()) else "none yet")
    parts.append(overview)

    devices = Table(title="devices", title_justify="left", title_style="bold")
    presences = (*PRESENCE_STATES, "unknown")
    devices.add_column("kind")
    for presence in presences:
        devices.add_column(presence, justify="right", style="red" if presence == "lost" else None)
    for kind, counts in sorted(now["devices"].items()):
        devices.add_row(kind, *(f"{counts.get(p, 0):,}" for p in presences))
    if now["devices"]:
        parts.append(devices)
    if clients is not None:
        parts.append(clients_table(clients))
    return Group(*parts)


def clients_url(url: str) -> str:
    """The client list beside the given /metrics URL: <base>/api/v1/ops/clients."""
    base = url.rstrip("/").removesuffix("/metrics")
    return f"{base}/api/v1/ops/clients"


def fetch_clients(url: str, token: str, timeout: float = 5.0) -> list[dict[str, Any]] | str:
    """The connected clients the token may see (the first 500), or one line saying why there are none to show."""
    try:
        response = httpx.get(url, params={"limit": 500}, headers={"authorization": f"Bearer {token}"}, timeout=timeout)
    except httpx.HTTPError as exc:
        return f"cannot read {url}: {type(exc).__name__}"
    if response.status_code != 200:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = None
        return f"{url} answered HTTP {response.status_code}" + (f": {detail}" if detail else "")
    body = response.json()
    rows = body.get("data") if isinstance(body, dict) else None
    return rows if isinstance(rows, list) else f"{url} did not answer a list of clients"


def clients_table(clients: list[dict[str, Any]] | str) -> Any:
    if isinstance(clients, str):
        return Text(f"clients: {clients}", style="yellow")
    table = Table(title=f"clients ({len(clients)})", title_justify="left", title_style="bold")
    for column in ("client id", "role", "restaurant", "address", "connected since", "queue"):
        table.add_column(column, justify="right" if column == "queue" else "left")
    for client in clients:
        table.add_row(
            str(client.get("client_id")),
            str(client.get("role")),
            str(client.get("restaurant_id") if client.get("restaurant_id") is not None else "-"),
            str(client.get("address") or "-"),
            str(client.get("connected_since") or "-")[:19],
            "-" if client.get("queue_depth") is None else f"{client['queue_depth']:,}",  # NATS does not say
        )
    return table


def status(
    url: Annotated[
        str, typer.Option(help="The API's base URL, or any orderbus /metrics URL (e.g. a broker's metrics port).")
    ] = DEFAULT_URL,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.", min=0.2)] = 2.0,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="ORDERBUS_TOKEN",
            help="An admin's or super_admin's API token: also list the connected clients it may see.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """A live view of connections, traffic, outbox lag, refusals and devices, from /metrics (Ctrl-C to stop)."""
    console = Console()
    try:
        target = metrics_url(url)
        current = scrape(target)
    except ScrapeError as exc:
        say(str(exc))
        raise typer.Exit(1) from None

    def clients() -> list[dict[str, Any]] | str | None:
        return fetch_clients(clients_url(target), token) if token else None

    listed = clients()
    if once:
        console.print(render(target, current, None, clients=listed))
        return
    previous: dict[str, Any] | None = None
    problem: str | None = None
    try:
        with Live(render(target, current, previous, clients=listed), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                try:
                    previous, current, problem = current, scrape(target), None
                    listed = clients()
                except ScrapeError as exc:
                    problem = str(exc)  # keep the last good figures, marked stale
                live.update(render(target, current, previous, problem, listed), refresh=True)
    except KeyboardInterrupt:
        pass
