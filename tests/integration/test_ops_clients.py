"""Connected clients for operators (`GET /ops/clients`, `POST /ops/clients/{id}/disconnect`), and presence
that follows the connection: a device an admin disconnects reads `lost` (its Last Will). On both stacks:
the embedded broker's tables, and the NATS cluster's CONNZ through the responder (tests/conftest.py)."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from core.topics import every_device
from scripts import raw_mqtt as raw
from tests.support import App, Stack, free_port, wait_for


@pytest.fixture
def two_sites(stack: Stack):
    """Restaurants A and B with an admin each; A's printer connected (with its Last Will) over raw MQTT."""
    a = stack.add_restaurant("Clients A", "clients-a@example.com")
    b = stack.add_restaurant("Clients B", "clients-b@example.com")
    token = stack.add_device(a, "printer-cl-1", "printer", station="grill")
    # NATS: the ingest's SUBACK can come before its consumer delivers (tests.support.nats_subscribed)
    wait_for(lambda: stack.subscribed(every_device("status"), "orderbus-ingest"), timeout=60)
    status_topic = f"restaurant/{a}/devices/printer-cl-1/status"
    sock = raw.open_socket(stack.settings.mqtt_port)
    sock.sendall(raw.connect("printer-cl-1", token, keepalive=30, will=(status_topic, b'{"state": "lost"}', True)))
    assert raw.connack_code(sock) == 0
    sock.sendall(raw.publish(status_topic, b'{"state": "online"}', qos=1, retain=True, packet_id=1))
    wait_for(lambda: stack.device("printer-cl-1").presence == "online")
    yield {
        "a": a,
        "b": b,
        "admin_a": stack.http(stack.api_token("admin-a", "admin", a)),
        "admin_b": stack.http(stack.api_token("admin-b", "admin", b)),
        "staff_a": stack.http(stack.api_token("staff-a", "staff", a)),
        "root": stack.http(stack.api_token("root", "super_admin", None)),
        "sock": sock,
    }
    sock.close()


def listed(http, client_id: str) -> dict | None:
    response = http.get("/ops/clients")
    assert response.status_code == 200, response.text
    return next((c for c in response.json()["data"] if c["client_id"] == client_id), None)


def outcomes(outcome: str) -> float:
    return REGISTRY.get_sample_value("orderbus_admin_disconnects_total", {"outcome": outcome}) or 0.0


def test_clients_are_listed_per_restaurant_and_another_restaurants_disconnect_is_refused(
    stack: Stack, two_sites, caplog
):
    a = two_sites["a"]
    mine = listed(two_sites["admin_a"], "printer-cl-1")
    assert mine is not None
    assert (mine["role"], mine["restaurant_id"]) == ("printer", a)
    assert mine["address"].startswith("127.0.0.1:")
    # what NATS does not say is None (broker/nats/clients.py), not a made-up 0
    assert (mine["listener"], mine["queue_depth"]) == ((None, None) if stack.on_nats else ("tcp", 0))
    assert datetime.fromisoformat(mine["connected_since"]).tzinfo is not None
    assert listed(two_sites["root"], "printer-cl-1") is not None  # super_admin sees every client
    assert listed(two_sites["admin_b"], "printer-cl-1") is None  # B's admin does not see A's printer

    refusals = outcomes("refused")
    with caplog.at_level(logging.INFO, logger="orderbus.ops"):
        refused = two_sites["admin_b"].post("/ops/clients/printer-cl-1/disconnect")
    assert refused.status_code == 403
    assert outcomes("refused") == refusals + 1  # counted
    assert any("printer-cl-1" in r.getMessage() and "by=admin-b" in r.getMessage() for r in caplog.records)
    assert two_sites["staff_a"].post("/ops/clients/printer-cl-1/disconnect").status_code == 403
    assert two_sites["staff_a"].get("/ops/clients").status_code == 403
    assert stack.http().get("/ops/clients").status_code == 401
    assert listed(two_sites["root"], "printer-cl-1") is not None  # nothing happened
    assert stack.device("printer-cl-1").presence == "online"


def test_without_the_embedded_broker_in_the_process_the_list_says_where_to_look(app: App):
    """The API alone, or on NATS: no broker tables here; 503 with the reason, and a disconnect does nothing."""
    root = app.http(app.api_token("root", "super_admin", None))
    listed_here = root.get("/ops/clients")
    assert listed_here.status_code == 503 and "connz" in listed_here.json()["detail"]
    before = outcomes("unavailable")
    assert root.post("/ops/clients/anyone/disconnect").status_code == 503
    assert outcomes("unavailable") == before + 1
    assert app.http().get("/ops/clients").status_code == 401


@pytest.mark.parametrize("bad", ["nobody-here", "a%23b", "x" * 129, "a%2Bb"])
def test_unknown_or_malformed_client_ids_are_refused(stack: Stack, two_sites, bad: str):
    response = two_sites["root"].post(f"/ops/clients/{bad}/disconnect")
    assert response.status_code == (404 if bad == "nobody-here" else 422), response.text
    assert listed(two_sites["root"], "printer-cl-1") is not None


def test_an_admin_disconnects_their_printer_and_its_presence_becomes_lost(stack: Stack, two_sites, caplog):
    before = outcomes("done")
    with caplog.at_level(logging.INFO, logger="orderbus.ops"):
        done = two_sites["admin_a"].post("/ops/clients/printer-cl-1/disconnect")
    assert done.status_code == 200, done.text
    assert outcomes("done") == before + 1
    assert any("printer-cl-1" in r.getMessage() and "by=admin-a" in r.getMessage() for r in caplog.records)
    wait_for(lambda: listed(two_sites["root"], "printer-cl-1") is None)
    wait_for(lambda: stack.device("printer-cl-1").presence == "lost")
    sock: socket.socket = two_sites["sock"]
    sock.settimeout(5)
    received = b"".join(iter(lambda: sock.recv(4096), b""))  # up to the broker's close (EOF)
    assert received.startswith(b"\x40")  # the PUBACK of `online`, then nothing: closed
    again = two_sites["admin_a"].post("/ops/clients/printer-cl-1/disconnect")
    assert again.status_code == 404


# --- orderbus status ---------------------------------------------------------------------------

ORDERBUS = str(Path(sys.executable).parent / "orderbus")


def test_status_lists_the_clients_the_token_may_see_and_says_why_when_it_cannot(stack: Stack, two_sites):
    root = stack.api_token("root", "super_admin", None)
    shown = subprocess.run(
        [ORDERBUS, "status", "--url", stack.base_url, "--once", "--token", root],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "clients (" in shown.stdout and "printer-cl-1" in shown.stdout and "127.0.0.1:" in shown.stdout
    other = stack.api_token("admin-b", "admin", two_sites["b"])
    hidden = subprocess.run(
        [ORDERBUS, "status", "--url", stack.base_url, "--once", "--token", other],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert hidden.returncode == 0 and "clients (0)" in hidden.stdout and "printer-cl-1" not in hidden.stdout
    bad = subprocess.run(
        [ORDERBUS, "status", "--url", stack.base_url, "--once", "--token", "not-a-token"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert bad.returncode == 0 and "HTTP 401" in bad.stdout  # the figures still show; the list says why not
    assert "connections" in bad.stdout


class _Metrics(BaseHTTPRequestHandler):
    """Serves a copy of a real stack's /metrics until `dead` is set; then accepts and hangs up unanswered."""

    body = b""
    dead = threading.Event()
    hung_up = served = 0

    def do_GET(self) -> None:
        if self.dead.is_set():
            type(self).hung_up += 1
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)
        type(self).served += 1

    def log_message(self, *_args: object) -> None:
        pass


def test_status_marks_the_figures_stale_when_the_server_stops_answering(stack: Stack):
    _Metrics.body = httpx.get(f"{stack.base_url}/metrics").content
    _Metrics.served = _Metrics.hung_up = 0  # class-wide: a run on the other stack counted too
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        process = subprocess.Popen(
            [ORDERBUS, "status", "--url", url, "--interval", "0.3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        wait_for(lambda: _Metrics.served >= 2 or process.poll() is not None, timeout=60)  # watching
        _Metrics.dead.set()
        wait_for(lambda: _Metrics.hung_up >= 2 or process.poll() is not None, timeout=60)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    finally:
        server.shutdown()
        _Metrics.dead.clear()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert "STALE: figures from" in out and "s ago" in out, out
    assert "connections" in out  # the last good figures are still shown


def test_status_against_a_dead_url_is_one_clear_line(stack: Stack):
    dead = subprocess.run(
        [ORDERBUS, "status", "--url", f"http://127.0.0.1:{free_port()}", "--once"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert dead.returncode == 1 and "cannot reach" in dead.stderr and "Traceback" not in dead.stderr
