"""`orderbus simulate`: seed a simulated chain, connect its devices, place orders, report what arrived."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Annotated

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from cli.device import Cafile, ConfigFile, Tls, bus_from_settings
from cli.errors import fail
from cli.options import DataDir, MqttPort, WsPort
from cli.runtime import token_service
from config.settings import load_settings
from core.endpoints import parse_endpoints
from core.tokens import TokenService
from devices.fleet import Endpoints, FleetRun, per_kind, summary
from devices.fleet_setup import FleetSetup, FleetShape, SetupFailed
from devices.refusal import accepts_anyone

console = Console(stderr=True, soft_wrap=True)


def simulate(
    restaurants: Annotated[int, typer.Option(min=1, max=500, help="Simulated restaurants.")] = 2,
    printers: Annotated[
        int, typer.Option(min=0, max=20, help="Kitchen printers per restaurant (one per station).")
    ] = 2,
    tablets: Annotated[int, typer.Option(min=0, max=20, help="KDS tablets per restaurant.")] = 1,
    scales: Annotated[int, typer.Option(min=0, max=200, help="Stock scales per restaurant.")] = 2,
    dashboards: Annotated[int, typer.Option(min=0, max=20, help="Dashboards (WebSocket) per restaurant.")] = 1,
    orders_per_minute: Annotated[float, typer.Option(min=0.1, max=60_000, help="Orders across the chain.")] = 60.0,
    duration: Annotated[float, typer.Option(min=1, help="Seconds of ordering.")] = 30.0,
    readings_per_second: Annotated[
        float,
        typer.Option(
            min=0,
            help="Scale readings across the chain, spread over the scales (the broker allows a device 20 messages/s; "
            "more per scale is dropped and reported as rate_limit).",
        ),
    ] = 40.0,
    drain: Annotated[float, typer.Option(min=0, help="Seconds to wait for the last deliveries.")] = 20.0,
    url: Annotated[
        str | None,
        typer.Option(
            "--api-url",
            help="The bus's HTTP address (default: http://<host>:<http_port> of the settings).",
            show_default=False,
        ),
    ] = None,
    mqtt_host: Annotated[
        str | None, typer.Option(help="Broker host, else the settings' (ORDERBUS_MQTT_HOST).", show_default="127.0.0.1")
    ] = None,
    mqtt_port: MqttPort = None,
    ws_port: WsPort = None,
    tls: Tls = None,
    cafile: Cafile = None,
    config: ConfigFile = None,
    data_dir: DataDir = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report here as JSON.")] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Keep the simulated restaurants afterwards (default: archive them, revoking their devices)."
        ),
    ] = False,
    progress_every: Annotated[float, typer.Option(min=0.5, help="Seconds between progress lines.")] = 5.0,
) -> None:
    """Run a fleet of simulated devices against a running bus; exit 1 if anything was lost or duplicated.

    The bus's address comes from its settings (--config, ORDERBUS_*), the flags first, as for the device agents;
    a broker that accepts a connection without a valid token is not orderbus's and is refused."""
    bus = bus_from_settings(config, mqtt_host, mqtt_port, tls, cafile, url)
    settings = load_settings(config, data_dir=data_dir, ws_port=ws_port)
    url = bus.api_url
    host, port = parse_endpoints(bus.host, bus.port, "--mqtt-host")[0]
    if accepts_anyone(host, port, bus.tls):
        fail(
            f"the broker at {host}:{port} accepts connections without a valid token: it is not orderbus's broker; "
            "point --mqtt-host/--mqtt-port (or the config file's) at orderbus's"
        )
    shape = FleetShape(restaurants, printers, tablets, scales, dashboards)
    try:
        report = asyncio.run(
            _simulate(
                token_service(settings),
                shape,
                url,
                Endpoints(host, port, settings.ws_port, bus.tls),
                orders_per_minute=orders_per_minute,
                duration=duration,
                readings_per_second=readings_per_second,
                drain=drain,
                keep=keep,
                progress_every=progress_every,
            )
        )
    except (httpx.HTTPError, SetupFailed) as exc:
        fail(f"cannot seed the fleet at {url}: {exc}")
    _print(report)
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2) + "\n")
    kinds = ("printed", "tablets", "dashboards")
    if any(report[k]["lost"] or report[k]["duplicated"] for k in kinds) or report["order_errors"]:
        raise typer.Exit(1)


async def _simulate(
    tokens: TokenService,
    shape: FleetShape,
    url: str,
    endpoints: Endpoints,
    *,
    orders_per_minute: float,
    duration: float,
    readings_per_second: float,
    drain: float,
    keep: bool = False,
    progress_every: float = 5.0,
) -> dict:
    operator = tokens.issue(sub="orderbus-simulate", role="super_admin", rid=None, audience="api", ttl_seconds=14400)
    headers = {"authorization": f"Bearer {operator}"}
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=f"{url}/api/v1", headers=headers, timeout=60, limits=limits) as http:
        drops_before = await _broker_drops(http, url)
        started = time.monotonic()
        sites = await FleetSetup(http, tokens, uuid.uuid4().hex[:6]).build(shape)
        console.print(
            f"seeded {shape.restaurants} restaurants, {per_kind(sites)} in {time.monotonic() - started:.1f} s"
        )
        run = FleetRun(sites, endpoints, readings_per_second)
        tasks = [*_fleet_tasks(run, readings_per_second), asyncio.create_task(run.watch_loop_lag())]
        tasks.append(asyncio.create_task(_progress(run, progress_every)))
        total = sum(per_kind(sites).values())
        started = time.monotonic()
        while sum(run.connected.values()) < total and time.monotonic() - started < 120:
            await asyncio.sleep(0.2)
        console.print(
            f"connected {dict(run.connected)} in {time.monotonic() - started:.1f} s; ordering for {duration:g} s"
        )
        await asyncio.sleep(1.0)  # the last subscriptions settle
        await run.place_orders(http, orders_per_minute, duration)
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and any(t.lost for t in (run.printed, run.tablets, run.dashboards)):
            await asyncio.sleep(0.2)
        await asyncio.sleep(min(1.0, drain))  # late duplicates would show up here
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # devices say `offline` as they stop
        drops_after = await _broker_drops(http, url)
        archived = {"restaurants": 0, "devices_revoked": 0} if keep else await _archive(http, sites)
    report = summary(run)
    report["broker_drops"] = {
        cause: drops_after.get(cause, 0) - drops_before.get(cause, 0) for cause in sorted(set(drops_after))
    }
    report["archived"] = archived
    report["fleet"] = {"restaurants": shape.restaurants, **per_kind(sites)}
    report["orders_per_minute"], report["duration_s"] = orders_per_minute, duration
    return report


async def _progress(run: FleetRun, every: float) -> None:
    """A line every `every` seconds while the run lasts: a long run is not silence."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(every)
        got = ", ".join(
            f"{name} {t.delivered}/{len(t.expected)}"
            for name, t in (("printed", run.printed), ("tablets", run.tablets), ("dashboards", run.dashboards))
        )
        console.print(
            f"[{time.monotonic() - started:5.0f} s] orders {len(run.placed)} (errors {sum(run.order_errors.values())}),"
            f" {got}, readings {run.readings_sent}, reconnects {sum(run.connect_failures.values())}"
        )


async def _broker_drops(http: httpx.AsyncClient, url: str) -> dict[str, float]:
    """The broker's dropped messages by cause (rate_limit, queue_full, size) from `/metrics`; the whole
    broker's, so another client's drops during the run count too. Empty when it is not readable."""
    try:
        response = await http.get(f"{url}/metrics")
    except httpx.HTTPError:
        return {}
    if response.status_code != 200:
        return {}
    drops: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        if family.name == "orderbus_broker_dropped_messages":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    drops[sample.labels.get("cause", "")] = sample.value
    return drops


async def _archive(http: httpx.AsyncClient, sites: list) -> dict[str, int]:
    """Archive the restaurants this run made (`sim <run> #n`): their devices revoked, out of the lists and
    the device counts; their orders stay as history (`core.services.archive`). `--keep` keeps them."""
    archived = {"restaurants": 0, "devices_revoked": 0}
    for site in sites:
        response = await http.post(f"/restaurants/{site.rid}/archive")
        if response.status_code == 200:
            archived["restaurants"] += 1
            archived["devices_revoked"] += response.json()["devices_revoked"]
        else:
            console.print(f"could not archive restaurant {site.rid}: {response.status_code} {response.text[:200]}")
    console.print(
        f"archived the {archived['restaurants']} simulated restaurants, {archived['devices_revoked']} devices revoked"
        " (--keep keeps them)"
    )
    return archived


def _fleet_tasks(run: FleetRun, readings_per_second: float) -> list[asyncio.Task]:
    scale_count = sum(len(site.scales) for site in run.sites)
    period = scale_count / readings_per_second if readings_per_second and scale_count else 3600.0
    tasks = []
    for site in run.sites:
        coros = [run.printer(site, device_id, token) for device_id, token in site.printers.items()]
        coros += [run.tablet(site, d, t, bumps=n == 0) for n, (d, t) in enumerate(site.tablets.items())]
        coros += [run.scale(site, d, token, item, period) for d, (token, item) in site.scales.items()]
        coros += [run.dashboard(site, client_id, token) for client_id, token in site.dashboards.items()]
        tasks += [asyncio.create_task(coro) for coro in coros]
    return tasks


def _print(report: dict) -> None:
    table = Table(title=f"orderbus simulate: {report['orders_placed']} orders, fleet {report['fleet']}")
    for column in ("kind", "expected", "delivered", "lost", "duplicated", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right")
    for kind in ("printed", "tablets", "dashboards"):
        row = report[kind]
        cells = [row["expected"], row["delivered"], row["lost"], row["duplicated"]]
        cells += [row["p50_ms"], row["p95_ms"], row["p99_ms"], row["max_ms"]]
        table.add_row(kind, *(str(c) for c in cells))
    out = Console(width=140)  # wide enough for every column even when piped
    out.print(table)
    for name in (
        "order_errors",
        "bumps",
        "readings_sent",
        "device_errors",
        "connections",
        "connect_failures",
        "simulator_loop_lag_ms",
        "broker_drops",
        "archived",
    ):
        out.print(f"{name}: {report[name]}")
