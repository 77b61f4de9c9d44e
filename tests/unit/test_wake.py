"""The wake channel between processes, on real UNIX sockets: a committed event's signal reaches the
listener; nobody listening costs nothing; a socket file left by a killed relay is taken over; what
cannot work (a file that is not a socket, a path too long for a socket) falls back to polling with a
warning and never raises."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.wake import SocketListener, wake_listener
from core.wake import MAX_SOCKET_PATH, SOCKET_NAME, SocketWake
from tests.support import Wakes


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """pytest's tmp_path can be long; a socket path must stay under ~107 bytes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ob-wake-") as made:
        yield Path(made)


def test_a_signal_wakes_the_listener_and_stop_removes_its_socket(short_dir: Path):
    wakes = Wakes()
    listener = SocketListener(short_dir / SOCKET_NAME, wakes)
    listener.start()
    assert listener.listening and (short_dir / SOCKET_NAME).is_socket()
    signal = SocketWake(short_dir / SOCKET_NAME)
    for _ in range(3):
        started = time.perf_counter()
        signal()
        assert wakes.wait()
        assert time.perf_counter() - started < 0.1
    for _ in range(1000):  # far more than the socket queues: the extra ones are dropped, never block
        signal()
    assert wakes.wait()
    listener.stop()
    assert not (short_dir / SOCKET_NAME).exists()
    signal()  # after the relay stopped: nothing happens
    signal.close()


def test_signalling_with_nobody_listening_is_silent_and_does_not_wait(short_dir: Path, caplog):
    signal = SocketWake(short_dir / SOCKET_NAME)
    with caplog.at_level(logging.WARNING, logger="orderbus.wake"):
        started = time.perf_counter()
        for _ in range(100):
            signal()
        assert time.perf_counter() - started < 0.5
    assert caplog.records == []


def test_a_socket_file_left_by_a_killed_relay_is_taken_over(short_dir: Path, caplog):
    path = short_dir / SOCKET_NAME
    code = (
        "import socket, sys, time; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); "
        "print('bound', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "bound"
    holder.kill()  # kill -9: the file stays, bound by nobody
    holder.wait()
    assert path.is_socket()
    SocketWake(path)()  # a stale socket refuses: no error

    wakes = Wakes()
    listener = SocketListener(path, wakes)
    with caplog.at_level(logging.WARNING, logger="orderbus.wake"):
        listener.start()
    assert listener.listening
    assert caplog.records == []  # a dead relay's file is not "another relay"
    SocketWake(path)()
    assert wakes.wait()
    listener.stop()


def test_a_second_relay_takes_the_socket_over_and_the_first_leaves_it_alone(short_dir: Path, caplog):
    path = short_dir / SOCKET_NAME
    first, second = Wakes(), Wakes()
    old = SocketListener(path, first)
    old.start()
    new = SocketListener(path, second)
    with caplog.at_level(logging.WARNING, logger="orderbus.wake"):
        new.start()
    assert "another relay listens" in caplog.text
    old.stop()  # e.g. the old bridge finishing its drain after the new one started
    assert path.is_socket()
    SocketWake(path)()
    assert second.wait() and first.count == 0
    new.stop()


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_a_path_that_is_not_a_socket_is_left_alone_and_the_relay_polls(short_dir: Path, caplog, kind: str):
    path = short_dir / SOCKET_NAME
    if kind == "file":
        path.write_text("not a socket")
    else:
        path.mkdir()
    listener = SocketListener(path, Wakes())
    with caplog.at_level(logging.WARNING, logger="orderbus.wake"):
        listener.start()
    assert not listener.listening
    assert "is not a socket" in caplog.text
    assert path.is_file() if kind == "file" else path.is_dir()
    SocketWake(path)()  # the sender meets a non-socket: no error
    listener.stop()
    assert path.exists()


def test_a_data_dir_too_long_for_a_socket_falls_back_to_polling_with_a_warning(tmp_path: Path, caplog):
    deep = tmp_path / ("d" * (MAX_SOCKET_PATH - len(os.fsencode(tmp_path))))
    deep.mkdir()
    path = deep / SOCKET_NAME
    assert len(os.fsencode(path)) > MAX_SOCKET_PATH
    with caplog.at_level(logging.WARNING, logger="orderbus.wake"):
        listener = SocketListener(path, Wakes())
        listener.start()
        signal = SocketWake(path)
        signal()
    assert not listener.listening and not path.exists()
    assert sum("too long" in record.getMessage() for record in caplog.records) == 2  # once each side
    listener.stop()


def test_the_listener_for_sqlite_is_the_data_directory_socket(short_dir: Path):
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{short_dir / 'orderbus.db'}")
    listener = wake_listener(engine, short_dir, Wakes())
    assert isinstance(listener, SocketListener) and listener.path == short_dir / SOCKET_NAME
