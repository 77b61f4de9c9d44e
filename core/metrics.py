"""The core's own metrics: outcomes of domain processes, counted where the domain decides them, and
the figures of the data the core owns (the outbox, devices by presence), read from the database when
scraped so they can never drift from the truth.

Exposition lives above (`api/metrics.py` renders the process registry and the collectors the
composition root hands it); this module only defines.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from sqlmodel import col

from core.models import Device, OutboxEvent
from core.topics import DEVICE_KINDS, PRESENCE_STATES

log = logging.getLogger("orderbus.metrics")

TICKET_OUTCOMES = ("printed", "failed", "unacknowledged")
TICKETS = Counter(
    "orderbus_tickets",
    "kitchen tickets by outcome: printed (confirmed by the printer), failed (the printer reported an error), "
    "unacknowledged (no confirmation in time).",
    ["outcome"],
)
for _outcome in TICKET_OUTCOMES:  # read 0 rather than be absent: a rate() over a missing series is "no data"
    TICKETS.labels(outcome=_outcome)

PRESENCE = (*PRESENCE_STATES, "unknown")

# Alerts name the restaurant and the printer, but a label per device must not grow the series without
# bound: the first LABEL_CAP distinct (restaurant, printer) pairs keep their values, the rest read "other".
LABEL_CAP = 200
OTHER = "other"


class LabelCap:
    """Bounded cardinality for a tuple of label values: the first `limit` distinct tuples keep theirs,
    later ones are folded into ("other", ...). Per process, in the order they were first seen."""

    def __init__(self, limit: int = LABEL_CAP) -> None:
        self.limit = limit
        self._seen: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()

    def __call__(self, *values: str) -> tuple[str, ...]:
        with self._lock:
            if values in self._seen:
                return values
            if len(self._seen) < self.limit:
                self._seen.add(values)
                return values
        return tuple(OTHER for _ in values)


PRINTER_TICKETS = Counter(
    "orderbus_printer_tickets",
    "kitchen tickets by restaurant, printer (device id; 'unknown' when none confirmed it) and outcome; "
    f"at most {LABEL_CAP} (restaurant, printer) pairs, the rest under 'other'",
    ["restaurant", "printer", "outcome"],
)
PRINTER_LABELS = LabelCap()  # goes with the process-wide counter above


def count_ticket(outcome: str, restaurant_id: int, device_id: str | None) -> None:
    """One ticket outcome: the overall counter, and the one that says which restaurant and printer."""
    TICKETS.labels(outcome=outcome).inc()
    restaurant, printer = PRINTER_LABELS(str(restaurant_id), device_id or "unknown")
    PRINTER_TICKETS.labels(restaurant=restaurant, printer=printer, outcome=outcome).inc()


def outbox_figures(engine: Engine) -> tuple[int, float]:
    """(events not yet published, age in seconds of the oldest of them; 0 when none)."""
    with engine.connect() as connection:
        pending, oldest = connection.execute(
            select(func.count(), func.min(OutboxEvent.created_at)).where(col(OutboxEvent.published_at).is_(None))
        ).one()
    if not pending or oldest is None:
        return int(pending or 0), 0.0
    if oldest.tzinfo is None:  # SQLite hands back naive datetimes; they were written in UTC
        oldest = oldest.replace(tzinfo=UTC)
    return int(pending), max(0.0, (datetime.now(UTC) - oldest).total_seconds())


def lost_printers(engine: Engine, cap: int = LABEL_CAP) -> dict[tuple[str, str], int]:
    """Lost printers by (restaurant, device id): the first `cap` by (restaurant, id); the rest counted
    under ("other", "other"), so an alert can name them without unbounded series."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(col(Device.restaurant_id), col(Device.id))
            .where(col(Device.revoked).is_(False), col(Device.kind) == "printer", col(Device.presence) == "lost")
            .order_by(col(Device.restaurant_id), col(Device.id))
        ).all()
    figures = {(str(rid), device_id): 1 for rid, device_id in rows[:cap]}
    if len(rows) > cap:
        figures[(OTHER, OTHER)] = len(rows) - cap
    return figures


def device_figures(engine: Engine) -> dict[tuple[str, str], int]:
    """Registered, unrevoked devices by (kind, presence), from the Device table."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(col(Device.kind), col(Device.presence), func.count())
            .where(col(Device.revoked).is_(False))
            .group_by(col(Device.kind), col(Device.presence))
        ).all()
    return {(kind, presence): int(count) for kind, presence, count in rows}


class DatabaseCollector(Collector):
    """Gauges read from one database when scraped: whether it answers, the outbox lag, devices."""

    def __init__(self, engine: Engine, label_cap: int = LABEL_CAP) -> None:
        self.engine = engine
        self.label_cap = label_cap

    def collect(self) -> Iterator[Metric]:
        database_up = GaugeMetricFamily("orderbus_database_up", "1 when the last scrape could query the database")
        try:
            pending, age = outbox_figures(self.engine)
            devices = device_figures(self.engine)
            lost = lost_printers(self.engine, self.label_cap)
        except Exception as exc:
            log.warning("could not query the database for /metrics: %s", type(exc).__name__)
            database_up.add_metric([], 0)
            yield database_up
            return
        database_up.add_metric([], 1)
        yield database_up
        yield GaugeMetricFamily("orderbus_outbox_pending", "committed events not yet published", value=pending)
        yield GaugeMetricFamily(
            "orderbus_outbox_oldest_age_seconds", "age of the oldest unpublished event (0 when none)", value=age
        )
        family = GaugeMetricFamily(
            "orderbus_devices",
            "registered, unrevoked devices by kind and last known presence (online, offline, lost, unknown)",
            labels=["kind", "presence"],
        )
        kinds = sorted(set(DEVICE_KINDS) | {kind for kind, _ in devices})
        for kind in kinds:
            for presence in sorted(set(PRESENCE) | {p for k, p in devices if k == kind}):
                family.add_metric([kind, presence], devices.get((kind, presence), 0))
        yield family
        printers = GaugeMetricFamily(
            "orderbus_printer_lost",
            f"lost kitchen printers by restaurant and printer (device id); beyond {self.label_cap} of them, "
            "the rest are counted under restaurant and printer 'other'",
            labels=["restaurant", "printer"],
        )
        for (restaurant, printer), count in lost.items():
            printers.add_metric([restaurant, printer], count)
        yield printers
