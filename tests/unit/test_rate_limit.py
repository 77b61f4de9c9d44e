"""core.rate_limit: the token bucket the broker enforces device publish limits with and devices pace by."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.rate_limit import FailureWindow, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_at_once_then_the_steady_rate():
    clock = Clock()
    bucket = TokenBucket(rate=8.0, burst=3, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.125  # one token comes back every 1/rate seconds
    assert bucket.try_take() is True
    assert bucket.try_take() is False


def test_take_owes_a_token_and_says_how_long_to_wait():
    clock = Clock()
    bucket = TokenBucket(rate=8.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == 0.125  # the fourth waits for the next token
    assert bucket.take() == 0.25  # and the fifth for the one after
    assert bucket.try_take() is False  # paho's thread never waits, and never takes what is owed
    clock.now += 0.375
    assert bucket.try_take() is True


def test_an_idle_bucket_fills_up_to_the_burst_only():
    clock = Clock()
    bucket = TokenBucket(rate=10.0, burst=2, clock=clock)
    clock.now += 3600
    assert [bucket.try_take() for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_bucket_that_could_never_give_is_refused(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


@given(
    rate=st.floats(min_value=0.5, max_value=100),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=2), max_size=200),
)
def test_never_more_than_burst_plus_rate_times_elapsed(rate, burst, gaps):
    clock = Clock()
    bucket = TokenBucket(rate, burst, clock=clock)
    start, granted = clock.now, 0
    for gap in gaps:
        clock.now += gap
        granted += bucket.try_take()
        assert granted <= burst + (clock.now - start) * rate + 1e-9


def test_a_failure_window_refuses_the_key_past_its_limit_until_the_oldest_failure_leaves():
    clock = Clock()
    window = FailureWindow(limit=3, window=60.0, clock=clock)
    for _ in range(2):
        window.failed("ann")
        clock.now += 10
    assert window.retry_after("ann") == 0.0  # two failures: still allowed
    window.failed("ann")  # the third, at t=20
    assert window.retry_after("ann") == pytest.approx(40.0)  # the first (t=0) leaves at t=60
    assert window.retry_after("bob") == 0.0  # keys are apart
    clock.now = 60.0
    assert window.retry_after("ann") == 0.0
    window.failed("ann")  # t=60: failures at 10, 20, 60 → limited until 10 leaves at 70
    assert window.retry_after("ann") == pytest.approx(10.0)


def test_forgetting_a_key_clears_its_failures():
    window = FailureWindow(limit=1, window=60.0, clock=Clock())
    window.failed("ann")
    assert window.retry_after("ann") > 0
    window.forget("ann")
    window.forget("never-seen")  # harmless
    assert window.retry_after("ann") == 0.0


def test_a_flood_of_keys_keeps_the_table_bounded_and_the_recent_ones():
    clock = Clock()
    window = FailureWindow(limit=1, window=10.0, clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        window.failed(key)
    clock.now = 20.0  # a, b, c are out of the window
    window.failed("d")
    assert set(window._failures) == {"d"}
    for key in ("e", "f", "g"):  # all recent: the oldest goes
        clock.now += 1
        window.failed(key)
    assert len(window._failures) == 3 and window.retry_after("g") > 0


@pytest.mark.parametrize(("limit", "seconds"), [(0, 60.0), (3, 0.0), (3, -1.0)])
def test_a_failure_window_needs_a_limit_and_a_window(limit: int, seconds: float):
    with pytest.raises(ValueError):
        FailureWindow(limit, seconds)
