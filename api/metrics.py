"""Exposition of a process's metrics, and the HTTP layer's own (latency and status by route template).

`/metrics` renders prometheus-client's process registry (every counter and histogram, wherever it is
defined: `core.metrics`, `broker.stats`, `bridge.metrics`, here) plus the collectors of state read at
scrape time that the composition root hands over (the broker's tables, the database). This module
knows none of them by name, so it imports nothing of the parts it exposes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.routing import Mount

HTTP_REQUEST_SECONDS = Histogram(
    "orderbus_http_request_duration_seconds",
    "HTTP request latency by method and route template (e.g. /api/v1/restaurants/{restaurant_id}/orders)",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_REQUESTS = Counter(
    "orderbus_http_requests", "HTTP requests by method, route template and status", ["method", "route", "status"]
)

disable_created_metrics()  # no `*_created` series: they double the output and no dashboard uses them


# --- exposition ----------------------------------------------------------------------------------


class _View:
    """The process-wide registry plus collectors of state, as one thing `generate_latest` can render."""

    def __init__(self, collectors: Iterable[Collector]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        for collector in self.collectors:
            yield from collector.collect()


def families(collectors: Iterable[Collector]) -> list[Metric]:
    return list(_View(collectors).collect())


def exposition(collectors: Iterable[Collector]) -> bytes:
    return generate_latest(_View(collectors))


# --- HTTP latency by route template ------------------------------------------------------------


def route_template(scope: dict) -> str:
    """The template of the route that served a request, prefixes of included routers restored.

    Starlette leaves the matched route in `scope["route"]`; FastAPI's included routers keep their
    own, unprefixed template there (`/restaurants/{restaurant_id}/orders`), so the prefix is taken back from
    the request's path, and used only if the template's fixed segments line up with the path."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str) or not template.startswith("/"):
        return "unmatched"
    if isinstance(route, Mount) or ":path}" in template:
        return template
    wanted = template.strip("/").split("/") if template.strip("/") else []
    actual = str(scope.get("path", "")).strip("/").split("/")
    extra = len(actual) - len(wanted)
    if extra <= 0:
        return template
    tail = actual[extra:]
    if any(w != a for w, a in zip(wanted, tail, strict=True) if not (w.startswith("{") and w.endswith("}"))):
        return template
    prefix = actual[:extra]
    if any("{" in part or not part for part in prefix):
        return template
    return "/" + "/".join(prefix) + template


class HttpMetricsMiddleware:
    """Pure ASGI middleware: latency and status of every HTTP request, labelled with the route's
    template (`/api/v1/restaurants/{restaurant_id}/orders`), never the raw path (unbounded label values);
    a request that matched no route is `unmatched`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            template = route_template(scope)
            method = scope.get("method", "?")
            if method not in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"):
                method = "other"
            HTTP_REQUEST_SECONDS.labels(method=method, route=template).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(method=method, route=template, status=str(status)).inc()
