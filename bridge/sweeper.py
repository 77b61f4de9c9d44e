"""Time-driven rules (tickets past their deadline, silent scales, expired idempotency keys), run once a second.

Each sweep gets a unit of work of its own and the sweeper commits it once the sweep returns: a
sweep that raises changes nothing, and does not undo what the sweeps before it did. `fence`, when
given, is asked before each pass (the bridge lease, `bridge.lease`): a process that lost the lease
runs no more sweeps, since the new holder runs them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from bridge.metrics import SWEEP_FAILURES
from core.models import utcnow
from core.services import idempotency
from core.unit_of_work import UnitOfWork

log = logging.getLogger("orderbus.sweeper")

UowFactory = Callable[[], UnitOfWork]
Sweep = Callable[[UnitOfWork], None]  # adds to the unit of work it is given; never commits


class Sweeper:
    def __init__(
        self,
        uow_factory: UowFactory,
        sweeps: list[Sweep],
        interval_seconds: float = 1.0,
        fence: Callable[[], bool] | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._fence = fence
        self._sweeps = sweeps
        self._interval = interval_seconds
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def run_once(self) -> None:
        for sweep in self._sweeps:
            try:
                with self._uow_factory() as uow:
                    sweep(uow)
                    uow.commit()
            except Exception:  # one failing rule must not stop the others, nor the next second's run
                name = getattr(sweep, "__name__", type(sweep).__name__)
                SWEEP_FAILURES.labels(sweep=name).inc()
                log.exception("sweep %s failed", name)

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            if self._fence is None or self._fence():
                self.run_once()


def prune_idempotency_keys(now: Callable[[], datetime] = utcnow) -> Sweep:
    """The sweep that deletes idempotency records past their 24 hours, a small batch a second."""

    def sweep(uow: UnitOfWork) -> None:
        idempotency.prune(uow, now())

    sweep.__name__ = "prune_idempotency_keys"
    return sweep
