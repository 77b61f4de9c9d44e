"""The bridge lease (bridge/lease.py) on its real engines: a PostgreSQL advisory lock on a real server
(a fresh database per test) and an flock on a real file, with the faults that end a holder: kill -9
of the process holding it, its lease connection terminated by an administrator, the lock file
replaced, the database unreachable. One holder at a time; a standby takes over within its retry."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine

from bridge.lease import KEY, LOCK_FILE, FileLease, LeaseKeeper, LeaseUnavailable, PostgresLease, lease_for
from bridge.sweeper import Sweeper
from core.db import make_engine
from core.unit_of_work import UnitOfWork
from tests import postgres
from tests.support import Stack, Subscriber, wait_for


@pytest.fixture
def pg() -> Iterator[Engine]:
    with postgres.fresh_database("lease") as url:
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def admin(engine: Engine) -> psycopg.Connection:
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(url, autocommit=True)


def lock_holder(engine: Engine) -> int | None:
    """The backend pid holding the bridge's advisory lock in this database, as pg_locks shows it."""
    high, low = (KEY >> 32) & 0xFFFFFFFF, KEY & 0xFFFFFFFF
    with admin(engine) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s AND objid = %s"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (high, low),
        ).fetchone()
    return None if row is None else int(row[0])


def terminate(engine: Engine, pid: int) -> None:
    with admin(engine) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


# --- PostgreSQL ------------------------------------------------------------------------------------


def test_one_postgres_holder_at_a_time_and_a_release_lets_the_other_in(pg: Engine):
    first, second = PostgresLease(pg), PostgresLease(pg)
    try:
        assert first.try_acquire() is True
        assert first.try_acquire() is True  # asking again while holding: still ours, no second lock
        assert second.try_acquire() is False
        assert first.check() and not second.check()
        assert lock_holder(pg) == first.backend_pid
        first.release()
        assert wait_for(second.try_acquire, timeout=5)
        assert lock_holder(pg) == second.backend_pid
        assert first.try_acquire() is False
    finally:
        first.release()
        second.release()


def test_a_terminated_lease_connection_is_noticed_by_its_holder_and_the_other_takes_the_lock(pg: Engine):
    holder, standby = PostgresLease(pg), PostgresLease(pg)
    try:
        assert holder.try_acquire() and not standby.try_acquire()
        pid = holder.backend_pid
        assert pid is not None
        terminate(pg, pid)  # an administrator, a failover, a network cut: the lock went with the session
        assert wait_for(standby.try_acquire, timeout=5)
        assert holder.check() is False  # the fence: the holder now knows it may not publish
        assert holder.check() is False  # and stays so (no silent reconnect into a lease it does not hold)
        assert holder.try_acquire() is False  # a new connection, but the lock is the standby's now
        assert lock_holder(pg) == standby.backend_pid
    finally:
        holder.release()
        standby.release()


def test_a_kill_9_of_the_holding_process_frees_the_lock_within_seconds(pg: Engine):
    url = pg.url.render_as_string(hide_password=False)
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_POSTGRES, url], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    standby = PostgresLease(pg)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert standby.try_acquire() is False
        child.kill()
        child.wait(10)
        assert wait_for(standby.try_acquire, timeout=10, interval=0.1)
    finally:
        child.kill()
        child.wait(10)
        standby.release()


_HOLD_POSTGRES = textwrap.dedent(
    """
    import sys, time
    from bridge.lease import PostgresLease
    from core.db import make_engine
    lease = PostgresLease(make_engine(sys.argv[1]))
    assert lease.try_acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


def test_an_unreachable_database_is_one_clear_error_and_no_lease(pg: Engine, free_tcp_port: int):
    unreachable = make_engine(pg.url.set(port=free_tcp_port).render_as_string(hide_password=False))
    lease = PostgresLease(unreachable)
    with pytest.raises(LeaseUnavailable) as caught:
        lease.try_acquire()
    message = str(caught.value)
    assert message.startswith("cannot ask PostgreSQL for the bridge lease: ") and "\n" not in message
    assert lease.check() is False
    unreachable.dispose()


@pytest.fixture
def free_tcp_port() -> int:
    from scripts.ports import free_port

    return free_port()


# --- the keeper --------------------------------------------------------------------------------------


class Recorder:
    """Stands in for the bridge's parts: records when they run, and whether two ever ran at once."""

    running: set[str] = set()
    overlap = False
    guard = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name
        self.log: list[str] = []

    def activate(self) -> None:
        with Recorder.guard:
            Recorder.overlap |= bool(Recorder.running)
            Recorder.running.add(self.name)
        self.log.append("active")

    def deactivate(self, graceful: bool) -> None:
        with Recorder.guard:
            Recorder.running.discard(self.name)
        self.log.append("graceful" if graceful else "lost")


def test_keepers_hand_over_on_a_terminated_lease_connection_with_one_line_and_one_count_per_change(pg: Engine, caplog):
    caplog.set_level(logging.INFO, logger="orderbus.bridge")
    Recorder.running, Recorder.overlap = set(), False
    a, b = Recorder("a"), Recorder("b")
    taken, lost = sample("orderbus_bridge_lease_acquired_total"), sample("orderbus_bridge_lease_lost_total")
    first = LeaseKeeper(PostgresLease(pg), a.activate, a.deactivate)
    first.start()
    assert first.active and a.log == ["active"]  # the lease was free: active when start returns
    second = LeaseKeeper(PostgresLease(pg), b.activate, b.deactivate)
    second.start()
    try:
        assert not second.active
        wait_for(lambda: caplog.text.count("bridge standby: another holds the lease") == 1)
        assert first.still_held()

        pid = first.lease.backend_pid  # type: ignore[attr-defined]
        terminate(pg, pid)
        wait_for(lambda: second.active and not first.active, timeout=10)
        assert a.log == ["active", "lost"] and b.log == ["active"]
        assert first.still_held() is False
        assert sample("orderbus_bridge_lease_acquired_total") == taken + 2
        assert sample("orderbus_bridge_lease_lost_total") == lost + 1
        assert "bridge standby: the lease was lost" in caplog.text
        # the former holder stands by (one line, however many attempts), the new one stays
        wait_for(lambda: caplog.text.count("bridge standby: another holds the lease") == 2, timeout=5)
        assert caplog.text.count("bridge active") == 2
    finally:
        second.stop()
        first.stop()
    assert b.log == ["active", "graceful"]
    assert sample("orderbus_bridge_active") == 0


def test_a_lone_keeper_whose_connection_is_terminated_takes_the_lease_again(pg: Engine):
    Recorder.running, Recorder.overlap = set(), False
    parts = Recorder("only")
    keeper = LeaseKeeper(PostgresLease(pg), parts.activate, parts.deactivate)
    keeper.start()
    try:
        pid = keeper.lease.backend_pid  # type: ignore[attr-defined]
        terminate(pg, pid)
        wait_for(lambda: parts.log == ["active", "lost", "active"], timeout=10)
        assert lock_holder(pg) not in (None, pid)
        assert not Recorder.overlap
    finally:
        keeper.stop()


def test_a_keeper_waits_quietly_for_an_unreachable_database_and_counts_its_attempts(caplog, tmp_path):
    from scripts.ports import free_port

    caplog.set_level(logging.INFO, logger="orderbus.bridge")
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere")
    parts = Recorder("nowhere")
    errors = sample("orderbus_bridge_lease_errors_total")
    keeper = LeaseKeeper(PostgresLease(engine), parts.activate, parts.deactivate, retry_seconds=0.05)
    keeper.start()
    try:
        wait_for(lambda: sample("orderbus_bridge_lease_errors_total") >= errors + 3)
        assert not keeper.active and parts.log == []
        lines = [r for r in caplog.records if "cannot ask PostgreSQL for the bridge lease" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.WARNING  # once, not once per attempt
    finally:
        keeper.stop()
        engine.dispose()


# --- the lock file (SQLite) ----------------------------------------------------------------------------


def test_one_file_holder_at_a_time_within_one_process_too(tmp_path: Path):
    first, second = FileLease(tmp_path / LOCK_FILE), FileLease(tmp_path / LOCK_FILE)
    assert first.try_acquire() and first.try_acquire()
    assert second.try_acquire() is False and first.check()
    first.release()
    assert second.try_acquire() and second.check() and not first.check()
    second.release()


def test_a_kill_9_of_the_holding_process_frees_the_file_lock(tmp_path: Path):
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLD_FILE, str(tmp_path / LOCK_FILE)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    standby = FileLease(tmp_path / LOCK_FILE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        assert standby.try_acquire() is False
        child.kill()
        child.wait(10)
        assert standby.try_acquire() is True  # the kernel released it with the process
    finally:
        child.kill()
        child.wait(10)
        standby.release()


_HOLD_FILE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from bridge.lease import FileLease
    lease = FileLease(Path(sys.argv[1]))
    assert lease.try_acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


def test_a_replaced_lock_file_makes_the_holder_stand_down(tmp_path: Path):
    path = tmp_path / LOCK_FILE
    holder = FileLease(path)
    assert holder.try_acquire()
    path.unlink()  # an operator cleaning up, a restore: a new file would let a second bridge in
    newcomer = FileLease(path)
    assert newcomer.try_acquire()
    assert holder.check() is False
    assert holder.try_acquire() is False  # the file now at the path is the newcomer's
    newcomer.release()


def test_an_unusable_data_directory_is_one_clear_error(tmp_path: Path):
    lease = FileLease(tmp_path / "missing" / LOCK_FILE)
    with pytest.raises(LeaseUnavailable, match=r"^cannot open the bridge lock file .*bridge\.lock: No such file"):
        lease.try_acquire()


def test_the_lease_follows_the_database(pg: Engine, tmp_path: Path):
    assert isinstance(lease_for(pg, tmp_path), PostgresLease)
    sqlite = make_engine(f"sqlite:///{tmp_path / 'orderbus.db'}")
    lease = lease_for(sqlite, tmp_path)
    assert isinstance(lease, FileLease) and lease.path == tmp_path / LOCK_FILE
    sqlite.dispose()


# --- the fences: what a process that lost the lease still does -----------------------------------------


def test_orderbus_up_whose_lock_file_is_taken_from_it_stops_publishing_and_resumes_when_it_is_back(tmp_path: Path):
    """In-process `orderbus up` on SQLite: the lock file replaced and held by another (as a second
    bridge would after an operator removed the file) makes the relay's next batch check fail, so a
    new order is not published by it; the bridge stands down, and takes over again once it may."""
    stack = Stack(tmp_path / "data").start()
    other = FileLease(stack.settings.data_dir / LOCK_FILE)
    watcher: Subscriber | None = None
    try:
        rid = stack.add_restaurant("Fence", "fence@example.com")
        item = stack.add_menu_item(rid, "soup")
        watcher = Subscriber(stack.settings.mqtt_port, "fence-dash", stack.mqtt_token("fence-dash", "admin", rid))
        assert watcher.connect() == 0 and watcher.subscribe(f"restaurant/{rid}/orders") == 1
        keeper = stack.runtime.bridge.keeper if stack.runtime.bridge else None
        assert keeper is not None and keeper.active

        (stack.settings.data_dir / LOCK_FILE).unlink()
        assert other.try_acquire()
        admin = stack.http(stack.api_token("fence-admin", "admin", rid))
        placed = admin.post(f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": item, "quantity": 1}]})
        assert placed.status_code == 201, placed.text
        wait_for(lambda: not keeper.active and stack.runtime.relay is None, timeout=5)
        assert watcher.drain(quiet=1.0) == []  # the fenced relay published nothing
        assert sample("orderbus_bridge_active") == 0

        other.release()
        got = watcher.collect(1, timeout=10)  # the lease again: the order goes out
        assert got[0].json()["data"]["order"]["id"] == placed.json()["id"]
        assert keeper.active and stack.runtime.relay is not None
    finally:
        other.release()
        if watcher is not None:
            watcher.close()
        stack.stop()


def test_a_fenced_sweeper_runs_no_sweeps_until_its_lease_is_back(tmp_path: Path):
    path = tmp_path / LOCK_FILE
    lease, other = FileLease(path), FileLease(path)
    runs: list[int] = []
    assert lease.try_acquire()
    engine = make_engine(f"sqlite:///{tmp_path / 'sweeps.db'}")
    sweeper = Sweeper(lambda: UnitOfWork(engine), [lambda uow: runs.append(1)], 0.02, lease.check)
    sweeper.start()
    try:
        wait_for(lambda: len(runs) >= 2)
        lease.release()
        assert other.try_acquire()
        count = len(runs)
        time.sleep(0.3)  # some fifteen intervals
        assert len(runs) <= count + 1  # at most the pass that had already passed its check
        other.release()
        assert lease.try_acquire()
        wait_for(lambda: len(runs) >= count + 3)
    finally:
        sweeper.stop()
        lease.release()
        other.release()
        engine.dispose()
