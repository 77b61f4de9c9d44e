"""The broker's subscription table: amqtt's dict of filter → subscribers, plus an index by topic level.

amqtt finds a message's subscribers by testing every filter in the table, so each message cost
grew with the number of connected devices (every device subscribes to its own commands topic):
with 2,450 devices, a fifth of the bus's CPU went to walking the table. The trie finds the
filters that match a topic by walking its levels instead.

Iteration returns snapshots: amqtt iterates the table across awaits, and a SUBSCRIBE or
UNSUBSCRIBE meanwhile raised "dictionary changed size" and killed that broadcast.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class _Node:
    children: dict[str, _Node] = field(default_factory=dict)
    topic_filter: str | None = None  # set where a filter ends


class FilterTrie:
    """The filters held, by level; `matching(topic)` follows MQTT 3.1.1 §4.7 (`topics.matches`)."""

    def __init__(self) -> None:
        self._root = _Node()

    def add(self, topic_filter: str) -> None:
        node = self._root
        for level in topic_filter.split("/"):
            node = node.children.setdefault(level, _Node())
        node.topic_filter = topic_filter

    def remove(self, topic_filter: str) -> None:
        levels = topic_filter.split("/")
        path = [self._root]
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return
            path.append(child)
        path[-1].topic_filter = None
        for depth in range(len(levels), 0, -1):  # prune the branch back to where something else lives
            node = path[depth]
            if node.children or node.topic_filter is not None:
                break
            del path[depth - 1].children[levels[depth - 1]]

    def matching(self, topic: str) -> list[str]:
        levels = topic.split("/")
        found: list[str] = []
        wildcards_at_root = not topic.startswith("$")  # `#` and `+` never match a $-topic's first level
        pending = [(self._root, 0)]
        while pending:
            node, depth = pending.pop()
            allow_wildcards = depth > 0 or wildcards_at_root
            if allow_wildcards and (rest := node.children.get("#")) is not None and rest.topic_filter is not None:
                found.append(rest.topic_filter)  # also matches the parent level itself ("a/#" matches "a")
            if depth == len(levels):
                if node.topic_filter is not None:
                    found.append(node.topic_filter)
                continue
            exact = node.children.get(levels[depth])
            if exact is not None:
                pending.append((exact, depth + 1))
            if allow_wildcards and (plus := node.children.get("+")) is not None:
                pending.append((plus, depth + 1))
        return found


class SubscriptionTable(dict[str, Any]):
    """amqtt's `_subscriptions`, kept in step with a FilterTrie by every way a key is added or removed."""

    def __init__(self) -> None:
        super().__init__()
        self._trie = FilterTrie()

    def __setitem__(self, topic_filter: str, subscriptions: Any) -> None:
        if topic_filter not in self:
            self._trie.add(topic_filter)
        super().__setitem__(topic_filter, subscriptions)

    def __delitem__(self, topic_filter: str) -> None:
        super().__delitem__(topic_filter)
        self._trie.remove(topic_filter)

    def matching(self, topic: str) -> list[tuple[str, list[Any]]]:
        """(filter, snapshot of its subscribers) for every filter that matches `topic`."""
        return [(f, list(super(SubscriptionTable, self).get(f, ()))) for f in self._trie.matching(topic)]

    def matching_now(self, topic: str) -> list[tuple[str, list[Any]]]:
        """Like `matching`, without the snapshots: for a caller that finishes before anything can change
        the table (the broker's synchronous routing)."""
        get = super().get
        return [(f, get(f, ())) for f in self._trie.matching(topic)]

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    # A list, not dict's live view: amqtt walks items() while other sessions subscribe and unsubscribe.
    def items(self) -> list[tuple[str, list[Any]]]:  # type: ignore[override]
        return [(key, list(value)) for key, value in super().items()]

    def setdefault(self, topic_filter: str, default: Any = None) -> Any:
        if topic_filter not in self:
            self[topic_filter] = default
        return super().__getitem__(topic_filter)

    def pop(self, topic_filter: str, *default: Any) -> Any:
        if topic_filter not in self:
            return super().pop(topic_filter, *default)
        value = super().pop(topic_filter)
        self._trie.remove(topic_filter)
        return value

    def clear(self) -> None:
        super().clear()
        self._trie = FilterTrie()
