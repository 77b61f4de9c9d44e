"""The printer connections against the TCP emulator: status bits, print confirmation, refusals; file and URLs."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from escpos.printer import Network

from devices.printer_io import FilePrinter, PrinterDown, PrinterStatus, TcpPrinter, decode_status, open_printer
from tests.printer_emulator import PrinterEmulator


@pytest.fixture
def emulator() -> Iterator[PrinterEmulator]:
    running = PrinterEmulator().start()
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({}, PrinterStatus(online=True)),
        ({"paper": "near_end"}, PrinterStatus(online=True, paper="near_end")),
        ({"paper": "out"}, PrinterStatus(online=False, paper="out")),
        ({"cover_open": True}, PrinterStatus(online=False, cover_open=True)),
        ({"online": False}, PrinterStatus(online=False)),
        ({"error": True}, PrinterStatus(online=False, error=True)),
    ],
)
def test_status_comes_from_dle_eot_1_to_4(emulator, state, expected):
    for key, value in state.items():
        setattr(emulator, key, value)
    printer = TcpPrinter("127.0.0.1", emulator.port)
    assert printer.status() == expected
    printer.close()


def test_problems_map_to_the_reasons_failed_reports():
    assert PrinterStatus(online=False, paper="out", cover_open=True).problem == ("cover_open", "cover open")
    assert PrinterStatus(online=False, paper="out").problem == ("paper_out", "paper out")
    assert PrinterStatus(online=False).problem == ("offline", "printer offline")
    assert PrinterStatus(online=True, paper="near_end").problem is None
    assert decode_status(0x12, 0x12, 0x12, 0x1E).paper == "near_end"  # bits 2-3: near-end sensor


def test_a_print_is_confirmed_by_gs_paren_h_once_it_is_on_paper(emulator):
    printer = TcpPrinter("127.0.0.1", emulator.port)
    printer.send(b"\x1b@hello\n\x1dV\x00")
    assert printer.confirm() is True
    printer.close()
    assert emulator.texts() == ["hello\n"]


def test_a_printer_that_never_confirms_is_not_waited_for_again(emulator):
    emulator.confirms = False
    printer = TcpPrinter("127.0.0.1", emulator.port, confirm_timeout=0.3)
    printer.send(b"one\n\x1dV\x00")
    assert printer.confirm() is False and printer.confirms is False
    printer.send(b"two\n\x1dV\x00")
    assert printer.confirm() is False  # at once this time
    printer.close()


def test_paper_running_out_during_the_print_is_a_failure_not_a_confirmation(emulator):
    printer = TcpPrinter("127.0.0.1", emulator.port, confirm_timeout=0.3)
    emulator.paper = "out"  # after the status check, before the bytes
    printer.send(b"lost\n\x1dV\x00")
    with pytest.raises(PrinterDown) as down:
        printer.confirm()
    assert down.value.reason == "paper_out"
    assert printer.confirms is None  # not taken as "cannot confirm"
    assert emulator.tickets == []


def test_a_stopped_printer_refuses_and_a_restarted_one_answers(emulator):
    printer = TcpPrinter("127.0.0.1", emulator.port)
    emulator.stop()
    with pytest.raises(PrinterDown, match="cannot connect") as down:
        printer.status()
    assert down.value.reason == "offline"
    emulator.start()
    assert printer.status().online
    printer.close()


def mute_server() -> tuple[socket.socket, int]:
    """Reads what it is sent and answers nothing (ends its side): a network card whose printer is off."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=hang_up, args=(conn,), daemon=True).start()

    def hang_up(conn: socket.socket) -> None:
        with conn:
            conn.recv(16)
            conn.shutdown(socket.SHUT_WR)
            while conn.recv(1024):  # until the client closes: closing with unread data would be a reset
                pass

    threading.Thread(target=serve, daemon=True).start()
    return listener, listener.getsockname()[1]


def test_no_answer_is_offline_where_python_escpos_says_paper_is_fine():
    listener, port = mute_server()
    try:
        assert Network("127.0.0.1", port, timeout=2).paper_status() == 2  # python-escpos: "paper adequate"
        with pytest.raises(PrinterDown) as down:
            TcpPrinter("127.0.0.1", port, timeout=2).status()
        assert down.value.reason == "offline"
    finally:
        listener.close()


def test_a_file_printer_appends(tmp_path):
    path = tmp_path / "lp0"
    path.write_bytes(b"earlier\n")
    printer = open_printer(f"file:{path}")
    assert isinstance(printer, FilePrinter)
    assert printer.status().online
    printer.send(b"ticket\n")
    printer.close()
    assert path.read_bytes() == b"earlier\nticket\n"
    with pytest.raises(PrinterDown):
        open_printer(f"file:{tmp_path}/missing/dir/lp0").status()


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("tcp://10.0.0.7:9100", "tcp://10.0.0.7:9100"),
        ("tcp://printer.local", "tcp://printer.local:9100"),
        ("file:/dev/usb/lp0", "file:/dev/usb/lp0"),
        ("dummy", "dummy"),
    ],
)
def test_printer_urls(url, name):
    assert open_printer(url).name == name


@pytest.mark.parametrize("url", ["", "lpt1:", "tcp://", "tcp://host:port", "tcp://host:70000", "file:", "usb://0"])
def test_unknown_printer_urls_are_refused(url):
    with pytest.raises(ValueError):
        open_printer(url)
