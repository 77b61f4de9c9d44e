"""Alerts name the restaurant and the printer with bounded cardinality: a cap on distinct label values,
the overflow folded into "other" (core.metrics.LabelCap, lost_printers, orderbus_printer_tickets)."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY
from sqlalchemy import update

from api import metrics
from core.metrics import OTHER, DatabaseCollector, LabelCap, count_ticket
from core.models import Device
from core.unit_of_work import UnitOfWork
from tests.support import App


def test_the_first_pairs_keep_their_values_and_the_rest_read_other():
    cap = LabelCap(limit=2)
    assert cap("1", "p1") == ("1", "p1")
    assert cap("1", "p2") == ("1", "p2")
    assert cap("2", "p3") == (OTHER, OTHER)  # past the cap
    assert cap("1", "p1") == ("1", "p1")  # a pair seen before keeps its values
    assert cap("9", "p9") == (OTHER, OTHER)


def test_the_cap_holds_under_threads():
    cap = LabelCap(limit=10)
    seen: list[tuple[str, ...]] = []
    lock = threading.Lock()

    def label(start: int) -> None:
        for n in range(start, start + 50):
            got = cap(str(n), f"p{n}")
            with lock:
                seen.append(got)

    threads = [threading.Thread(target=label, args=(k * 50,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({pair for pair in seen if pair != (OTHER, OTHER)}) == 10


def test_lost_printers_are_labelled_up_to_the_cap_and_the_rest_folded(app: App):
    rid = app.add_restaurant("Cap Bistro", "cap@example.com")
    for n in range(5):
        app.add_device(rid, f"cap-printer-{n}", "printer", station="grill")
    app.add_device(rid, "cap-tablet", "tablet")
    with UnitOfWork(app.engine) as uow:  # as ingest leaves them after their Last Wills
        uow.session.execute(update(Device).values(presence="lost"))
        uow.commit()
    families = {f.name: f for f in metrics.families([DatabaseCollector(app.engine, label_cap=3)])}
    samples = {
        (s.labels["restaurant"], s.labels["printer"]): s.value for s in families["orderbus_printer_lost"].samples
    }
    assert samples == {
        (str(rid), "cap-printer-0"): 1,
        (str(rid), "cap-printer-1"): 1,
        (str(rid), "cap-printer-2"): 1,
        (OTHER, OTHER): 2,  # the tablet is not a printer
    }


def test_ticket_outcomes_are_counted_by_restaurant_and_printer(app: App):
    def value(restaurant: str, printer: str) -> float:
        labels = {"restaurant": restaurant, "printer": printer, "outcome": "failed"}
        return REGISTRY.get_sample_value("orderbus_printer_tickets_total", labels) or 0.0

    before = value("77", "label-printer")
    before_unknown = value("77", "unknown")
    count_ticket("failed", 77, "label-printer")
    count_ticket("failed", 77, None)
    assert value("77", "label-printer") == before + 1
    assert value("77", "unknown") == before_unknown + 1
