"""`orderbus device printer` as an operator runs it: bad options are a clear error and exit 2, before anything runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

ORDERBUS = Path(sys.executable).parent / "orderbus"
# the agent reads its identity from the token (the broker verifies it); this one is never sent anywhere
TOKEN = jwt.encode({"sub": "grill-printer", "rid": 1, "role": "printer", "station": "grill"}, "k" * 32, "HS256")


def printer(*options: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [str(ORDERBUS), "device", "printer", "--state-dir", str(state_dir), "--mqtt-port", "1", *options]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        (
            ["--token", TOKEN, "--printer", "lpt1:"],
            "Invalid value for --printer: 'lpt1:': a printer is tcp://HOST:9100",
        ),
        (["--token", TOKEN, "--printer", "tcp://host:port"], "Invalid value for --printer: 'tcp://host:port' is not"),
        (["--token", TOKEN, "--printer", "file:"], "Invalid value for --printer: file: needs a path"),
        (["--token", TOKEN, "--printer", "dummy", "--backup", "usb:0"], "Invalid value for --backup"),
        (["--token", "not-a-token", "--printer", "dummy"], "Invalid value for --token: not a JWT"),
    ],
)
def test_bad_options_exit_with_code_2_and_say_what_is_wrong(tmp_path, options, complaint):
    result = printer(*options, state_dir=tmp_path / "state")
    assert result.returncode == 2, result.stdout + result.stderr
    assert complaint in " ".join(result.stderr.replace("│", " ").split())
    assert TOKEN not in result.stdout + result.stderr
    assert not (tmp_path / "state").exists()  # refused before anything was set up


def test_a_token_that_is_not_a_printers_is_refused(tmp_path):
    scale = jwt.encode({"sub": "scale-1", "rid": 1, "role": "scale"}, "k" * 32, "HS256")
    result = printer("--token", scale, "--printer", "dummy", state_dir=tmp_path / "state")
    assert result.returncode == 2
    assert "wrong role: the token is a scale token, this is the printer agent" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_cli_agent_prints_a_placed_order_and_leaves_cleanly_on_sigterm(stack, tmp_path):
    """The real process: token from the environment, logs without it, `offline` on SIGTERM, exit code 0."""
    from tests.printer_emulator import PrinterEmulator
    from tests.support import wait_for

    rid = stack.add_restaurant("A", "a@example.com")
    burger = stack.add_menu_item(rid, "Burger", station="grill")
    token = stack.add_device(rid, "grill-printer", "printer", station="grill")
    printer = PrinterEmulator().start()
    command = [str(ORDERBUS), "device", "printer", "--printer", printer.url, "--state-dir", str(tmp_path / "state")]
    command += ["--mqtt-port", str(stack.settings.mqtt_port)]
    env = {**os.environ, "ORDERBUS_DEVICE_TOKEN": token}
    agent = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: stack.subscribed(f"restaurant/{rid}/kitchen/grill/tickets", "grill-printer"), timeout=30)
        staff = stack.http(stack.api_token("staff-a", "staff", rid))
        order = {"items": [{"menu_item_id": burger, "quantity": 3}], "pickup_name": "Maria"}
        placed = staff.post(f"/restaurants/{rid}/orders", json=order)
        assert placed.status_code == 201, placed.text
        wait_for(lambda: printer.tickets, timeout=30)
        assert "PICKUP Maria" in printer.texts()[0] and "3 x Burger" in printer.texts()[0]
        tickets = f"/restaurants/{rid}/orders/{placed.json()['id']}/tickets"
        wait_for(lambda: staff.get(tickets).json()["data"][0]["state"] == "printed")
    finally:
        agent.terminate()
        out, err = agent.communicate(timeout=30)
        printer.stop()
    assert agent.returncode == 0, err
    assert "ticket 1 printed on the primary printer" in err
    assert token not in out + err
    wait_for(lambda: stack.device("grill-printer").presence == "offline")
