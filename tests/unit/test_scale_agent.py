"""devices.scale without a broker: the reading document, seq, heartbeat, offline hold-back, tare, replies, stdin."""

from __future__ import annotations

import io
import json
from datetime import datetime
from typing import Any

import pytest

from devices.load_cell import LoadCell
from devices.scale import (
    DEFAULT_HEARTBEAT_SECONDS,
    HEARTBEAT_ENV,
    Reporter,
    ScaleAgent,
    feed_stdin,
    heartbeat_from_env,
    parse_grams,
    steer_load_cell,
)
from devices.stability import StabilityFilter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A reporter wired to a list instead of a broker, with a clock and a link switch the test controls."""

    def __init__(self, heartbeat: float = 10.0) -> None:
        self.sent: list[dict[str, Any]] = []
        self.online = True
        self.clock = Clock()
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.reporter = Reporter(
            self.sent.append,
            item_id=12,
            boot_id="boot-1",
            heartbeat_seconds=heartbeat,
            connected=lambda: self.online,
            clock=self.clock,
            out=self.out,
        )

    def grams(self) -> list[float]:
        return [body["grams"] for body in self.sent]


def test_a_reading_is_exactly_the_documented_document():
    rig = Rig()
    rig.reporter.report(5230.54)
    [body] = rig.sent
    assert set(body) == {"item_id", "grams", "seq", "boot_id", "ts"}
    assert (body["item_id"], body["grams"], body["seq"], body["boot_id"]) == (12, 5230.5, 1, "boot-1")
    assert datetime.fromisoformat(body["ts"]).utcoffset() is not None
    assert body["ts"].endswith("Z")
    json.dumps(body)  # plain JSON
    assert "reading 5230.5 g (seq 1)" in rig.out.getvalue()


def test_seq_grows_with_every_publish_heartbeats_included():
    rig = Rig(heartbeat=10)
    rig.reporter.report(100)
    rig.clock.now = 10
    rig.reporter.tick()
    rig.reporter.report(200)
    assert [b["seq"] for b in rig.sent] == [1, 2, 3]
    assert rig.grams() == [100, 100, 200]


def test_the_heartbeat_repeats_the_latest_weight_every_period_and_not_more():
    rig = Rig(heartbeat=10)
    rig.reporter.tick()
    assert rig.sent == []  # nothing weighed yet: nothing to repeat
    rig.reporter.report(100)
    for now in (1, 5, 9.9):
        rig.clock.now = now
        rig.reporter.tick()
    assert len(rig.sent) == 1
    rig.clock.now = 10
    rig.reporter.tick()
    rig.clock.now = 15
    rig.reporter.report(90)  # a new weight restarts the period
    rig.clock.now = 24
    rig.reporter.tick()
    rig.clock.now = 25
    rig.reporter.tick()
    assert rig.grams() == [100, 100, 90, 90]


def test_offline_nothing_is_published_and_the_latest_goes_out_on_reconnect():
    rig = Rig()
    rig.reporter.tick()
    rig.online = False
    rig.reporter.report(100)
    rig.reporter.report(90)
    rig.reporter.tick()
    assert rig.sent == []
    assert rig.reporter.pending
    rig.online = True
    rig.reporter.tick()
    assert rig.grams() == [90]
    assert not rig.reporter.pending


def test_a_reconnect_republishes_the_latest_at_once():
    rig = Rig(heartbeat=10)
    rig.reporter.report(100)
    rig.online = False
    rig.reporter.tick()
    rig.online = True
    rig.clock.now = 1
    rig.reporter.tick()
    assert [b["seq"] for b in rig.sent] == [1, 2]


def test_the_heartbeat_must_be_positive():
    with pytest.raises(ValueError):
        Rig(heartbeat=0)


def test_heartbeat_comes_from_the_bus_setting(monkeypatch):
    monkeypatch.delenv(HEARTBEAT_ENV, raising=False)
    assert heartbeat_from_env() == DEFAULT_HEARTBEAT_SECONDS == 10
    monkeypatch.setenv(HEARTBEAT_ENV, "2.5")
    assert heartbeat_from_env() == 2.5
    monkeypatch.setenv(HEARTBEAT_ENV, "-1")
    with pytest.raises(ValueError):
        heartbeat_from_env()


def test_samples_go_through_the_stability_filter():
    rig = Rig()
    agent = ScaleAgent(rig.reporter, StabilityFilter(window=3, tolerance_grams=3), err=rig.err)
    for raw in (100, 130, 100, 100, 100, 100.5):
        agent.sample(raw)
    assert rig.grams() == [100]


def test_tare_zeroes_the_load_cell_and_publishes_the_new_zero():
    rig = Rig()
    agent = ScaleAgent(rig.reporter, StabilityFilter(window=3, tolerance_grams=3), err=rig.err)
    assert not agent.tare()  # nothing weighed yet
    for raw in (480, 480, 480):
        agent.sample(raw)
    agent.command(b'{"type":"tare"}')
    assert agent.offset == 480
    agent.sample(480)
    agent.sample(730)
    for _ in range(3):
        agent.sample(730)
    assert rig.grams() == [480, 0, 250]
    assert "tared" in rig.err.getvalue()


def test_tare_on_stdin_weights_republishes_zero_at_once():
    rig = Rig()
    agent = ScaleAgent(rig.reporter, None, err=rig.err)
    agent.stable(300)
    agent.command(b'{"type":"tare"}')
    agent.stable(550)
    assert rig.grams() == [300, 0, 250]


def test_error_replies_are_printed_on_stderr_and_others_ignored():
    rig = Rig()
    agent = ScaleAgent(rig.reporter, None, err=rig.err)
    error = {"type": "error", "reason": "not_whole", "detail": "2.5 units", "topic": "restaurant/1/devices/s/readings"}
    agent.command(json.dumps(error).encode())
    agent.command(b'{"type":"ack"}')
    agent.command(b"\xff not json")
    agent.command(b'{"type":"dance"}')
    lines = rig.err.getvalue().splitlines()
    assert lines[0] == "bus refused restaurant/1/devices/s/readings: not_whole: 2.5 units"
    assert lines[1].startswith("unreadable command")
    assert lines[2] == "ignored command 'dance'"
    assert len(lines) == 3
    assert rig.sent == []


@pytest.mark.parametrize(("text", "grams"), [("5230.5", 5230.5), ("0", 0.0), ("-3", -3.0), ("1e3", 1000.0)])
def test_parse_grams(text, grams):
    assert parse_grams(text) == grams


@pytest.mark.parametrize("text", ["abc", "5 kg", "nan", "inf", "-Infinity", "1,5"])
def test_parse_grams_refuses_what_is_not_a_finite_number(text):
    with pytest.raises(ValueError):
        parse_grams(text)


def test_stdin_lines_are_published_and_bad_ones_reported_and_skipped():
    rig = Rig()
    agent = ScaleAgent(rig.reporter, None, err=rig.err)
    feed_stdin(agent, io.StringIO("5000\n\nfive kilos\n4750.25\nnan\n 4500 \n"), rig.err)
    assert rig.grams() == [5000, 4750.2, 4500]  # published to 0.1 g
    assert rig.err.getvalue().splitlines() == [
        "line 3: not a number of grams: 'five kilos'; skipped",
        "line 5: not a finite weight: 'nan'; skipped",
    ]


def test_the_simulated_cell_is_steered_from_stdin():
    load = LoadCell(5000, noise_grams=0, drift_grams_per_minute=0)
    err = io.StringIO()
    steer_load_cell(load, io.StringIO("-250\n+1000\nbanana\n3000\n"), err)
    assert load.true_grams == 3000
    steer_load_cell(load, io.StringIO("-250\n+1000\n"), err)
    assert load.true_grams == 3750
    assert "banana" in err.getvalue()
