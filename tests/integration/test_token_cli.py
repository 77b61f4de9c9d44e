"""`orderbus token` cannot trap: no silent new key, no printer without a station, and a registered device's
token issued through its record (the same path as `POST …/devices/{id}/token`), saying what it replaces.

The real command on a real SQLite data directory; what the broker would make of each token is read from the
bus's own rule (core.services.devices.token_status, which `GET /devices/me/status` answers with)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cli.runtime import token_service
from config.settings import Settings
from core.commands import DeviceIn
from core.models import Device
from core.services import devices
from core.tokens import TokenService
from core.unit_of_work import UnitOfWork
from tests.support import Site

ORDERBUS = str(Path(sys.executable).parent / "orderbus")


def orderbus_token(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ORDERBUS, "token", "--data-dir", str(data_dir), *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def bus(settings: Settings, engine: Engine) -> tuple[Settings, Engine, TokenService, int]:
    """A data directory as `orderbus up` leaves it: schema, key, a restaurant with a registered grill printer."""
    tokens = token_service(settings)
    site = Site()
    site.engine, site.tokens = engine, tokens
    rid = site.add_restaurant("A", "a@example.com")
    with UnitOfWork(engine) as uow:
        devices.create_device(
            uow, tokens, rid, DeviceIn(id="printer-grill-1", kind="printer", name="G", station="grill")
        )
        uow.commit()
    return settings, engine, tokens, rid


def verdict(engine: Engine, tokens: TokenService, token: str) -> str | None:
    with UnitOfWork(engine) as uow:
        return devices.token_status(uow, tokens, token).reason


def jti(engine: Engine) -> str | None:
    with UnitOfWork(engine) as uow:
        device = uow.session.get(Device, "printer-grill-1")
        assert device is not None
        return device.token_jti


def test_a_data_directory_without_orderbus_data_is_refused_in_one_line_and_left_alone(tmp_path):
    for data_dir in (tmp_path / "missing", tmp_path / "empty"):
        if data_dir.name == "empty":
            data_dir.mkdir()
        result = orderbus_token(data_dir, "--sub", "watcher", "--restaurant", "1", "--role", "staff")
        assert result.returncode == 2, result.stdout
        assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "holds no orderbus data" in result.stderr and "--data-dir" in result.stderr
        assert not (data_dir / "jwt.key").exists()  # no silent new key
    assert not (tmp_path / "missing").exists()


def test_a_printer_token_needs_a_station(bus):
    settings, engine, _tokens, rid = bus
    before = jti(engine)
    result = orderbus_token(settings.data_dir, "--sub", "printer-9", "--restaurant", str(rid), "--role", "printer")
    assert result.returncode == 2 and result.stdout == ""
    assert "needs --station" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert jti(engine) == before


def test_a_registered_device_token_goes_through_its_record_and_replaces_the_previous_one(bus):
    settings, engine, tokens, rid = bus
    # the API re-issued one earlier: a token minted beside the record would now be refused as replaced
    with UnitOfWork(engine) as uow:
        api_token = devices.reissue_token(uow, tokens, rid, "printer-grill-1", 30).token
        uow.commit()
    args = ["--sub", "printer-grill-1", "--restaurant", str(rid), "--role", "printer", "--station", "grill"]
    result = orderbus_token(settings.data_dir, *args)
    assert result.returncode == 0, result.stderr
    cli_token = result.stdout.strip().splitlines()[-1]
    assert "replaces the device's previous token" in result.stderr
    assert verdict(engine, tokens, cli_token) is None  # the broker takes it
    assert verdict(engine, tokens, api_token) == "replaced"  # and says why it no longer takes the earlier one
    assert jti(engine) == tokens.verify(cli_token, "mqtt")["jti"]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--role", "printer", "--station", "bar"], "use --station grill"),
        (["--role", "scale"], "use --role printer"),
        (["--role", "staff"], "use --role printer"),
    ],
)
def test_a_token_that_contradicts_the_record_is_refused_and_changes_nothing(bus, args, complaint):
    settings, engine, _tokens, rid = bus
    before = jti(engine)
    result = orderbus_token(settings.data_dir, "--sub", "printer-grill-1", "--restaurant", str(rid), *args)
    assert result.returncode == 2 and result.stdout == ""
    assert complaint in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert jti(engine) == before


def test_a_revoked_device_gets_no_token(bus):
    settings, engine, _tokens, rid = bus
    with UnitOfWork(engine) as uow:
        devices.revoke_device(uow, rid, "printer-grill-1")
        uow.commit()
    args = ["--sub", "printer-grill-1", "--restaurant", str(rid), "--role", "printer", "--station", "grill"]
    result = orderbus_token(settings.data_dir, *args)
    assert result.returncode == 2 and result.stdout == ""
    assert "revoked" in result.stderr and "register a new device" in result.stderr


def test_an_unregistered_subject_gets_a_plain_token(bus):
    settings, _engine, tokens, rid = bus
    result = orderbus_token(settings.data_dir, "--sub", "watcher", "--restaurant", str(rid), "--role", "staff")
    assert result.returncode == 0, result.stderr
    claims = tokens.verify(result.stdout.strip().splitlines()[-1], "mqtt")
    assert claims["sub"] == "watcher" and claims["role"] == "staff"


def test_a_bad_ttl_is_a_usage_error(bus):
    settings, _engine, _tokens, rid = bus
    result = orderbus_token(settings.data_dir, "--sub", "w", "--restaurant", str(rid), "--role", "staff", "--ttl", "0")
    assert result.returncode == 2 and "--ttl" in result.stderr
