"""The core's own metrics: outcomes of domain processes, counted where the domain decides them.

Exposition lives above (`api/metrics.py` renders the process registry); this module only defines.
"""

from __future__ import annotations

from prometheus_client import Counter

TICKET_OUTCOMES = ("printed", "failed", "unacknowledged")
TICKETS = Counter(
    "orderbus_tickets",
    "kitchen tickets by outcome: printed (confirmed by the printer), failed (the printer reported an error), "
    "unacknowledged (no confirmation in time). Counted by the printer pipeline (device issues).",
    ["outcome"],
)
for _outcome in TICKET_OUTCOMES:  # read 0 rather than be absent: a rate() over a missing series is "no data"
    TICKETS.labels(outcome=_outcome)
