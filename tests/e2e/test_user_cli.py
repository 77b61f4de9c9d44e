"""`orderbus user create|list` through the real command, then a login through the API on the same data
directory: the first super_admin of a new install, made without us. Bad input is one `error:` line,
exit 2, and no account."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app as cli
from config.settings import Settings
from core.db import make_engine
from tests.support import App

ORDERBUS = str(Path(sys.executable).parent / "orderbus")
PASSWORD = "first boss password"

pytestmark = pytest.mark.e2e


def orderbus(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORDERBUS, *args], input=stdin, capture_output=True, text=True, timeout=60, env=os.environ)


def refused(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orderbus: error: "), result.stderr
    return lines[0]


def listed(data_dir: str, *args: str) -> str:
    result = orderbus("user", "list", "--data-dir", data_dir, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_super_admin_made_by_the_cli_logs_in_through_the_api(tmp_path):
    data_dir = str(tmp_path / "data")  # nothing there yet: the command makes the database
    made = orderbus(
        "user", "create", "--email", "Boss@Chain.example", "--name", "Boss", "--super-admin", "--password-stdin",
        "--data-dir", data_dir, stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created super_admin boss@chain.example" in made.stdout
    assert PASSWORD not in made.stdout + made.stderr
    assert "boss@chain.example" in listed(data_dir) and PASSWORD not in listed(data_dir)

    settings = Settings(data_dir=tmp_path / "data")
    engine = make_engine(settings.db_url)
    try:
        site = App(settings, engine)
        answer = site.http().post("/auth/login", json={"email": "boss@chain.example", "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        assert answer.json()["role"] == "super_admin" and answer.json()["restaurant_id"] is None
        boss = site.http(answer.json()["access_token"])
        created = boss.post("/restaurants", json={"name": "Bistro", "admin": {"email": "ann@b.example", "name": "Ann"}})
        assert created.status_code == 201
        rid = created.json()["id"]

        # an operator may also make a restaurant's user by hand (a locked-out admin, say)
        staff = orderbus(
            "user", "create", "--email", "cook@b.example", "--name", "Cook", "--restaurant", str(rid),
            "--role", "staff", "--password-stdin", "--data-dir", data_dir, stdin="cook password\n",
        )  # fmt: skip
        assert staff.returncode == 0, staff.stderr
        assert (
            site.http()
            .post("/auth/login", json={"email": "cook@b.example", "password": "cook password"})
            .json()["role"]
            == "staff"
        )
        assert listed(data_dir, "--restaurant", str(rid)).splitlines()[1].split("\t")[1:] == [
            "staff",
            "cook@b.example",
            "Cook",
        ]
    finally:
        engine.dispose()


def test_bad_input_is_one_line_and_makes_no_account(tmp_path):
    data_dir = str(tmp_path / "data")
    base = ["user", "create", "--name", "Boss", "--password-stdin", "--data-dir", data_dir]
    assert "8 to 200 characters" in refused(
        orderbus(*base, "--email", "boss@chain.example", "--super-admin", stdin="short\n")
    )
    assert "either --super-admin or --restaurant" in refused(
        orderbus(*base, "--email", "boss@chain.example", stdin=PASSWORD + "\n")
    )
    assert "either --super-admin or --restaurant" in refused(
        orderbus(*base, "--email", "boss@chain.example", "--super-admin", "--restaurant", "1", stdin=PASSWORD + "\n")
    )
    assert "--email" in refused(orderbus(*base, "--email", "not-an-email", "--super-admin", stdin=PASSWORD + "\n"))
    assert "--role must be admin or staff" in refused(
        orderbus(*base, "--email", "x@chain.example", "--restaurant", "1", "--role", "super_admin", stdin=PASSWORD)
    )
    assert "restaurant 7 not found" in refused(
        orderbus(*base, "--email", "x@chain.example", "--restaurant", "7", stdin=PASSWORD + "\n")
    )
    assert listed(data_dir) == ""

    assert orderbus(*base, "--email", "boss@chain.example", "--super-admin", stdin=PASSWORD + "\n").returncode == 0
    assert "exists already" in refused(
        orderbus(*base, "--email", "BOSS@chain.example", "--super-admin", stdin="another password\n")
    )
    assert len(listed(data_dir).splitlines()) == 1


def test_the_password_prompt_is_hidden_and_asked_twice(tmp_path):
    args = ["user", "create", "--email", "boss@chain.example", "--name", "Boss", "--super-admin"]
    args += ["--data-dir", str(tmp_path / "data")]
    result = CliRunner().invoke(cli, args, input=f"{PASSWORD}\nsomething else\n{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output and PASSWORD not in result.output
    assert "created super_admin boss@chain.example" in result.output
