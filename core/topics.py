"""The topic scheme, the bus's public contract: every `restaurant/{rid}/…` topic, built and parsed here.

Also the names that travel with it: the token roles, the device kinds and the presence states.
Standard library only, no other orderbus import: a device agent loads it without the core's
database code. Topic *matching* (wildcards, filter containment) is the ACL's: `broker.topics`.

A template below is the part after `restaurant/{rid}/`; `{…}` is one level filled by a builder.
Builders refuse a value that would change the topic's shape (`/`, a wildcard, NUL, empty), so a
topic built here always parses back to what built it.
"""

from __future__ import annotations

from typing import NamedTuple

ROOT = "restaurant"

# --- names ------------------------------------------------------------------------------------
# roles: the `role` claim of a token, the table names of config/acl.toml
SUPER_ADMIN, ADMIN, STAFF = "super_admin", "admin", "staff"
PRINTER, TABLET, SCALE = "printer", "tablet", "scale"
OPS, SERVICE = "ops", "service"
DEVICE_KINDS = (PRINTER, TABLET, SCALE)  # a registered device's kind is also its token's role
DEVICE_ROLES = frozenset(DEVICE_KINDS)
ROLES = frozenset({SUPER_ADMIN, ADMIN, STAFF, *DEVICE_KINDS, OPS, SERVICE})

# presence: what a device says on its retained `status` topic (the Last Will says `lost`)
ONLINE, OFFLINE, LOST = "online", "offline", "lost"
PRESENCE_STATES = (ONLINE, OFFLINE, LOST)

# --- templates --------------------------------------------------------------------------------
# published by the bus
ORDERS = "orders"
OPEN_ORDER = "orders/open/{order_id}"  # retained; cleared by an empty payload when the order closes
TICKETS = "kitchen/{station}/tickets"
INVENTORY = "inventory"
LOW_STOCK = "inventory/low_stock"
INVENTORY_ITEM = "inventory/items/{item_id}"  # retained
MENU = "menu"
CATEGORIES = "categories"
NOTIFICATIONS = "notifications"
COMMANDS = "devices/{did}/commands"
# published by devices
STATUS = "devices/{did}/status"  # retained, also the Last Will
EVENTS = "devices/{did}/events"
READINGS = "devices/{did}/readings"

CHANNELS = (ORDERS, INVENTORY, LOW_STOCK, MENU, CATEGORIES, NOTIFICATIONS)  # one per restaurant, no key
DEVICE_TEMPLATES = (COMMANDS, STATUS, EVENTS, READINGS)
FROM_DEVICES = (STATUS, EVENTS, READINGS)
TEMPLATES = (
    *(ORDERS, OPEN_ORDER, TICKETS, INVENTORY, LOW_STOCK, INVENTORY_ITEM, MENU, CATEGORIES, NOTIFICATIONS),
    *DEVICE_TEMPLATES,
)
_INT_KEYS = frozenset({"{order_id}", "{item_id}"})
_PARTS = {template: tuple(template.split("/")) for template in TEMPLATES}
_FORBIDDEN = frozenset("/+#\x00")


class TopicError(ValueError):
    """Not a topic of this scheme, or a value that cannot be one level of a topic."""


class Topic(NamedTuple):
    """One parsed topic: its restaurant, its template, and the value of the template's one `{…}` (if any)."""

    restaurant_id: int
    template: str
    key: int | str | None = None


class DeviceTopic(NamedTuple):
    restaurant_id: int
    device_id: str
    leaf: str  # commands | status | events | readings


# --- building ---------------------------------------------------------------------------------


def build(template: str, restaurant_id: int, key: int | str | None = None) -> str:
    """The topic of `template` in one restaurant; `key` fills its `{…}` level."""
    parts = _PARTS.get(template)
    if parts is None:
        raise TopicError(f"no such topic template: {template!r}")
    levels = [ROOT, _id_level(restaurant_id)]
    for part in parts:
        if part[0] != "{":
            levels.append(part)
        elif key is None:
            raise TopicError(f"{template} needs a {part}")
        else:
            levels.append(_id_level(key) if part in _INT_KEYS else _name_level(key))
    if key is not None and "{" not in template:
        raise TopicError(f"{template} takes no key")
    return "/".join(levels)


def orders(rid: int) -> str:
    return build(ORDERS, rid)


def open_order(rid: int, order_id: int) -> str:
    return build(OPEN_ORDER, rid, order_id)


def tickets(rid: int, station: str) -> str:
    return build(TICKETS, rid, station)


def inventory_item(rid: int, item_id: int) -> str:
    return build(INVENTORY_ITEM, rid, item_id)


def channel(rid: int, name: str) -> str:
    """One of the restaurant's keyless channels (CHANNELS): orders, inventory, menu, …"""
    if name not in CHANNELS:
        raise TopicError(f"not a channel: {name!r}")
    return build(name, rid)


def device(rid: int, device_id: str, leaf: str) -> str:
    """A device's own topic; `leaf` is commands, status, events or readings."""
    return build(f"devices/{{did}}/{leaf}", rid, device_id)


# --- filters (to subscribe with) --------------------------------------------------------------


def everything(rid: int) -> str:
    """Every topic of one restaurant: what a dashboard reads."""
    return f"{ROOT}/{_id_level(rid)}/#"


def open_orders(rid: int) -> str:
    """Every open order of one restaurant (retained): a screen's picture at connect."""
    return f"{ROOT}/{_id_level(rid)}/orders/open/+"


def all_tickets(rid: int) -> str:
    """The tickets of every station of one restaurant (what a kitchen tablet reads)."""
    return f"{ROOT}/{_id_level(rid)}/kitchen/+/tickets"


def every_device(leaf: str) -> str:
    """One leaf of every device in every restaurant (what the bus's ingest reads)."""
    if f"devices/{{did}}/{leaf}" not in FROM_DEVICES:
        raise TopicError(f"devices publish status, events and readings, not {leaf!r}")
    return f"{ROOT}/+/devices/+/{leaf}"


def every_restaurant(template: str) -> str:
    """One template in every restaurant, its `{…}` level a wildcard too: `restaurant/+/orders/open/+`."""
    parts = _PARTS.get(template)
    if parts is None:
        raise TopicError(f"no such topic template: {template!r}")
    return "/".join([ROOT, "+", *("+" if part[0] == "{" else part for part in parts)])


DEVICE_FILTERS = tuple(every_device(template.rsplit("/", 1)[1]) for template in FROM_DEVICES)

# --- parsing ----------------------------------------------------------------------------------


def parse(topic: str) -> Topic:
    """The restaurant, template and key of a topic of this scheme; TopicError for anything else."""
    levels = topic.split("/")
    if len(levels) < 3 or levels[0] != ROOT:
        raise TopicError(f"not a restaurant topic: {topic!r}")
    rid = _int_level(levels[1])
    if rid is None:
        raise TopicError(f"not a restaurant id: {levels[1]!r}")
    rest = levels[2:]
    for template, parts in _PARTS.items():
        if len(parts) != len(rest):
            continue
        key: int | str | None = None
        for part, level in zip(parts, rest, strict=True):
            if part[0] == "{":
                key = _int_level(level) if part in _INT_KEYS else (level if _is_name(level) else None)
                if key is None:
                    break
            elif part != level:
                break
        else:
            return Topic(rid, template, key)
    raise TopicError(f"not a topic of the scheme: {topic!r}")


def parse_device(topic: str, templates: tuple[str, ...] = DEVICE_TEMPLATES) -> DeviceTopic:
    """A device's topic as (restaurant id, device id, leaf); TopicError for any other, or one not in `templates`."""
    found = parse(topic)
    if found.template not in templates:
        raise TopicError(f"not a device topic: {topic!r}")
    return DeviceTopic(found.restaurant_id, str(found.key), found.template.rsplit("/", 1)[1])


# --- levels -----------------------------------------------------------------------------------


def _is_name(text: str) -> bool:
    return bool(text) and not _FORBIDDEN.intersection(text)


def _int_level(text: str) -> int | None:
    """A non-negative integer written the one way `str(int)` writes it (so `07` is no restaurant 7)."""
    if not (text.isascii() and text.isdigit()) or (len(text) > 1 and text[0] == "0"):
        return None
    return int(text)


def _id_level(value: int | str) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TopicError(f"not an id: {value!r}")
    return str(value)


def _name_level(value: int | str) -> str:
    if not isinstance(value, str) or not _is_name(value):
        raise TopicError(f"cannot be one topic level: {value!r}")
    return value
