"""How big input may be: the broker's packet limit, shared out among the fields of the largest event.

Every event goes out as one MQTT packet, and the broker refuses a packet above `MAX_PACKET_BYTES`.
An event the relay cannot publish holds up the outbox, so no valid input may make one: the limits
on free text and on list lengths below are derived from the packet limit, assuming the worst
encoding of a character in the relay's payloads, which are UTF-8 JSON (`bridge/routing.encode`):
an astral character such as an emoji takes 4 bytes (free text refuses the control characters that
JSON would escape to 6). The largest event is an order's (`new_order`, `order_updated`
with a refund, and the retained open-order state, which is the same payload); a kitchen ticket
carries a part of it. A refund's record names each order line at most once (its id and a
quantity, ~56 bytes a line), which `LINE_FIGURES_BYTES` covers: an order line's own figures take far
less than that budget. Menu items, notifications and devices are far below the limit.
`tests/integration/test_largest_events.py` builds the largest valid input and publishes it.
"""

from __future__ import annotations

MAX_PACKET_BYTES = 256 * 1024  # any single MQTT packet, TCP and WebSocket (the broker's limit)
BYTES_PER_CHAR = 4  # the widest character in UTF-8 JSON (an astral one, e.g. an emoji)
RESERVE_BYTES = 8 * 1024  # the MQTT header, the topic, the envelope and the order's figures and keys
LINE_FIGURES_BYTES = 320  # one order line's keys, ids, figures, station and punctuation, and its refund entry

MAX_ID = 2**63 - 1  # a database row id (a signed 64-bit integer)

NAME_CHARS = 120  # restaurants, menus, categories, menu items (an order line carries its item's name)
DESCRIPTION_CHARS = 500  # a menu item's description
REASON_CHARS = 500  # why stock moved, why an order was refunded
ORDER_NOTES_CHARS = 500
TABLE_CHARS = 40
DEVICE_NAME_CHARS = 80
PERSON_CHARS = 60  # pickup and server names
MODIFIERS_PER_LINE = 8
MODIFIER_CHARS = 32
LINE_NOTES_CHARS = 140
COURSE_CHARS = 24

_ORDER_TEXT_CHARS = ORDER_NOTES_CHARS + TABLE_CHARS + 2 * PERSON_CHARS + REASON_CHARS  # a refund's reason too
_LINE_TEXT_CHARS = NAME_CHARS + MODIFIERS_PER_LINE * MODIFIER_CHARS + LINE_NOTES_CHARS + COURSE_CHARS
_LINE_BYTES = _LINE_TEXT_CHARS * BYTES_PER_CHAR + LINE_FIGURES_BYTES

MAX_ORDER_LINES = (MAX_PACKET_BYTES - RESERVE_BYTES - _ORDER_TEXT_CHARS * BYTES_PER_CHAR) // _LINE_BYTES
MAX_LINE_QUANTITY = 999  # what a kitchen ticket prints
