"""The broker's subscription table: snapshots while a delivery walks it, and an index that finds
exactly the filters `topics.matches` would."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.subscription_table import FilterTrie, SubscriptionTable
from broker.topics import matches


def table_of(entries: dict[str, list]) -> SubscriptionTable:
    table = SubscriptionTable()
    for key, value in entries.items():
        table[key] = value
    return table


def test_adding_a_filter_during_iteration_does_not_break_it():
    table = table_of({"a": [1], "b": [2]})
    seen = []
    for key, subscribers in table.items():
        table[f"new-{key}"] = [9]  # a SUBSCRIBE arriving while a delivery awaits
        seen.append((key, subscribers))
    assert seen == [("a", [1]), ("b", [2])]
    assert [key for key in table] == ["a", "b", "new-a", "new-b"]


def test_removing_a_subscriber_during_delivery_skips_nobody():
    table = table_of({"a": ["first", "second", "third"]})
    delivered = []
    for _key, subscribers in table.matching("a"):
        for subscriber in subscribers:
            delivered.append(subscriber)
            if subscriber == "first":
                table["a"].pop(0)  # "first" unsubscribes mid-delivery
    assert delivered == ["first", "second", "third"]


def test_deleting_filters_during_iteration_keeps_the_index_in_step():
    table = table_of({"a/+": [1], "a/b": [2], "#": [3]})
    for key in table:
        del table[key]
    assert dict(table) == {}
    assert table.matching("a/b") == []
    table["a/b"] = [4]
    assert table.matching("a/b") == [("a/b", [4])]


def test_the_index_finds_wildcards_and_skips_dollar_topics():
    trie = FilterTrie()
    for topic_filter in ["#", "+/x", "a/#", "a/+", "a/b", "a/b/#", "$SYS/#", "a/+/c", "+"]:
        trie.add(topic_filter)
    assert sorted(trie.matching("a/b")) == ["#", "a/#", "a/+", "a/b", "a/b/#"]
    assert sorted(trie.matching("a")) == ["#", "+", "a/#"]
    assert sorted(trie.matching("$SYS/broker/load")) == ["$SYS/#"]
    trie.remove("a/b")
    assert "a/b" not in trie.matching("a/b") and "a/b/#" in trie.matching("a/b")
    trie.remove("not/there")  # removing what was never added changes nothing
    assert sorted(trie.matching("q/x")) == ["#", "+/x"]


def test_setdefault_and_pop_keep_the_index_in_step():
    table = SubscriptionTable()
    table.setdefault("a/+", []).append("s1")
    assert table.setdefault("a/+", ["ignored"]) == ["s1"]
    assert table.matching("a/b") == [("a/+", ["s1"])]
    assert table.pop("a/+") == ["s1"] and table.matching("a/b") == []
    assert table.pop("a/+", None) is None


def test_replacing_a_filters_subscribers_keeps_one_index_entry():
    table = table_of({"a": [1]})
    table["a"] = [2]
    assert table.matching("a") == [("a", [2])]
    del table["a"]
    assert table.matching("a") == []


LEVELS = st.sampled_from(["a", "b", "c", "$SYS", "", "x1"])
TOPICS = st.lists(LEVELS, min_size=1, max_size=4).map("/".join)
FILTERS = (
    st.lists(st.sampled_from(["a", "b", "$SYS", "", "+"]), min_size=0, max_size=3)
    .flatmap(lambda head: st.sampled_from([head, [*head, "#"]]) if head else st.just(["#"]))
    .map("/".join)
)


@given(st.lists(FILTERS, max_size=12, unique=True), st.lists(FILTERS, max_size=4), TOPICS)
def test_the_index_agrees_with_matches(filters, removed, topic):
    trie = FilterTrie()
    for topic_filter in filters:
        trie.add(topic_filter)
    for topic_filter in removed:
        trie.remove(topic_filter)
    held = [f for f in filters if f not in removed]
    assert sorted(trie.matching(topic)) == sorted(f for f in held if matches(f, topic))


def test_matching_now_finds_what_matching_finds_without_copying():
    """The engine routes synchronously, so it may walk the live lists (nothing changes them meanwhile)."""
    table = table_of({"a/+": [1], "a/#": [2], "b": [3]})
    assert sorted((f, list(s)) for f, s in table.matching_now("a/x")) == sorted(table.matching("a/x"))
    [(_, live)] = [(f, s) for f, s in table.matching_now("a/x") if f == "a/+"]
    assert live is dict.__getitem__(table, "a/+")
