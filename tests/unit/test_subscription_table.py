"""The broker's subscription table survives changes made while a delivery walks it."""

from broker.server import _SnapshotSubscriptions


def test_adding_a_filter_during_iteration_does_not_break_it():
    table = _SnapshotSubscriptions({"a": [1], "b": [2]})
    seen = []
    for key, subscribers in table.items():
        table[f"new-{key}"] = [9]  # a SUBSCRIBE arriving while a delivery awaits
        seen.append((key, subscribers))
    assert seen == [("a", [1]), ("b", [2])]
    assert [key for key in table] == ["a", "b", "new-a", "new-b"]


def test_removing_a_subscriber_during_iteration_skips_nobody():
    table = _SnapshotSubscriptions({"a": ["first", "second", "third"]})
    delivered = []
    for _key, subscribers in table.items():
        for subscriber in subscribers:
            delivered.append(subscriber)
            if subscriber == "first":
                table["a"].pop(0)  # "first" unsubscribes mid-delivery
    assert delivered == ["first", "second", "third"]


def test_deleting_a_filter_during_iteration_by_key():
    table = _SnapshotSubscriptions({"a": [], "b": []})
    for key in table:
        del table[key]
    assert dict(table) == {}
