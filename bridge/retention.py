"""Retention: published outbox events, and notifications read, older than their retention period are
deleted, a small batch per sweeper pass (each pass its own short transaction), so the tables stay
bounded without a long lock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from bridge.metrics import OUTBOX_PRUNED
from bridge.sweeper import Sweep
from core.models import utcnow
from core.services import notifications, outbox
from core.unit_of_work import UnitOfWork

PRUNE_BATCH = 500


def prune_outbox(retention_days: float, now: Callable[[], datetime] = utcnow, batch_size: int = PRUNE_BATCH) -> Sweep:
    """A sweep deleting up to `batch_size` events published more than `retention_days` before `now()`."""

    def prune_outbox(uow: UnitOfWork) -> None:
        deleted = outbox.prune(uow, now() - timedelta(days=retention_days), batch_size)
        if deleted:
            OUTBOX_PRUNED.inc(deleted)

    return prune_outbox


def prune_notifications(
    retention_days: float, now: Callable[[], datetime] = utcnow, batch_size: int = PRUNE_BATCH
) -> Sweep:
    """A sweep deleting up to `batch_size` notifications read more than `retention_days` before `now()`."""

    def prune_notifications(uow: UnitOfWork) -> None:
        notifications.prune(uow, now() - timedelta(days=retention_days), batch_size)

    return prune_notifications
