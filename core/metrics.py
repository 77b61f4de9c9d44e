"""The core's own metrics: outcomes of domain processes, counted where the domain decides them, and
the figures of the data the core owns (the outbox, devices by presence), read from the database when
scraped so they can never drift from the truth.

Exposition lives above (`api/metrics.py` renders the process registry and the collectors the
composition root hands it); this module only defines.
"""

from __future__ import annotations

import logging
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

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        database_up = GaugeMetricFamily("orderbus_database_up", "1 when the last scrape could query the database")
        try:
            pending, age = outbox_figures(self.engine)
            devices = device_figures(self.engine)
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
