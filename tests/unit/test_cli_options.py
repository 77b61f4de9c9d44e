"""Every command's options, read from the real typer app: defaults shown, one flag per setting, --version,
the roles listed. In-process (typer's CliRunner): nothing is started, only --help is printed."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli.main import app
from config.settings import Settings
from core.topics import ROLES

WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400", "NO_COLOR": "1"}

# spellings of a setting that some command uses under its own name: each must not appear anywhere
SYNONYMS = {
    "--port": "--mqtt-port",
    "--broker-port": "--mqtt-port",
    "--broker-host": "--mqtt-host",
    "--tls-ca": "--mqtt-tls-ca",
    "--tls": "--mqtt-tls",
    "--ca": "--mqtt-tls-ca",
    "--cafile": "--mqtt-tls-ca",
    "--broker-url": "--broker",
    "--nats": "--broker",
    "--nats-url": "--broker",
    "--db": "--database-url",
    "--db-url": "--database-url",
    "--database": "--database-url",
    "--datadir": "--data-dir",
    "--data": "--data-dir",
    "--dir": "--data-dir",
    "--http": "--http-port",
    "--api-port": "--http-port",
    "--ws": "--ws-port",
    "--websocket-port": "--ws-port",
    "--base-url": "--api-url",
    "--api": "--api-url",
}


def commands(group: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(words, click command) of every leaf command, e.g. (("device", "printer"), <command>)."""
    group = group if group is not None else typer.main.get_command(app)
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def options(command: Any) -> list[Any]:
    return [p for p in command.params if p.param_type_name == "option" and p.name != "help"]


ALL = list(commands())


def help_rows(words: tuple[str, ...]) -> dict[str, str]:
    """The help of one command, as {flag: its row's text (wrapped lines joined)}."""
    result = CliRunner().invoke(app, [*words, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    rows: dict[str, str] = {}
    current = None
    for line in result.output.splitlines():
        start = re.match(r"^\W*(?:\*\s+)?(--[a-z][a-z-]*)", line)
        if start:
            current = start.group(1)
            rows[current] = ""
        if current is not None:
            rows[current] += " " + line.strip("│ ")
    return rows


def test_every_command_is_found():
    names = {" ".join(words) for words, _ in ALL}
    assert {"up", "broker", "api", "bridge", "token", "db upgrade", "device printer", "simulate"} <= names


@pytest.mark.parametrize(("words", "command"), ALL, ids=[" ".join(w) for w, _ in ALL])
def test_every_option_with_a_default_shows_it(words, command):
    rows = help_rows(words)
    fields = Settings.model_fields
    checked = 0
    for option in options(command):
        flag = option.opts[0]
        if option.required or option.is_flag or option.hidden:
            continue
        if option.default is not None:  # typer's own default
            shown = str(option.default.value if hasattr(option.default, "value") else option.default)
        elif option.name in fields and fields[option.name].default is not None:  # falls back to the setting
            shown = str(fields[option.name].default)
        else:
            continue
        assert flag in rows, (flag, rows)
        text = " ".join(rows[flag].split())
        assert "[default:" in text and shown in text.split("[default:", 1)[1], f"{' '.join(words)} {flag}: {text}"
        checked += 1
    if {"data_dir", "mqtt_port"} & {o.name for o in options(command)}:
        assert checked, words


@pytest.mark.parametrize(("words", "command"), ALL, ids=[" ".join(w) for w, _ in ALL])
def test_no_help_text_is_eaten_as_markup(words, command):
    """Rich reads `[default: ./data]` in a help text as a style tag and prints nothing of it."""
    rows = help_rows(words)
    for option in options(command):
        for bracketed in re.findall(r"\[[^\]]*\]", option.help or ""):
            assert bracketed.replace(" ", "") in rows[option.opts[0]].replace(" ", ""), (words, option.opts, bracketed)


def test_the_settings_defaults_are_the_ones_shown():
    rows = help_rows(("up",))
    for flag, field in [("--data-dir", "data_dir"), ("--http-port", "http_port"), ("--mqtt-port", "mqtt_port")]:
        assert f"[default: ({Settings.model_fields[field].default})]" in " ".join(rows[flag].split())
    assert "[default: (--host)]" in " ".join(rows["--mqtt-host"].split())


def test_no_command_spells_a_setting_its_own_way():
    """A synonym may only stand beside the common spelling on the same option (the agents' `--tls` and
    `--cafile`, as in mosquitto_sub, are aliases of `--mqtt-tls` and `--mqtt-tls-ca`), never instead of it."""
    used: dict[str, list[str]] = {}
    alone: dict[str, list[str]] = {}
    for words, command in ALL:
        for option in options(command):
            for flag in option.opts:
                used.setdefault(flag, []).append(" ".join(words))
                if flag in SYNONYMS and SYNONYMS[flag] not in option.opts:
                    alone.setdefault(flag, []).append(" ".join(words))
    wrong = {flag: (SYNONYMS[flag], where) for flag, where in alone.items()}
    assert not wrong, f"use the common spelling: {wrong}"
    # the MQTT broker is --mqtt-host/--mqtt-port in every command that connects to or runs one
    for words, command in ALL:
        flags = {flag for option in options(command) for flag in option.opts}
        if words[0] in ("up", "broker", "api", "bridge", "device", "simulate"):
            assert "--mqtt-port" in flags, words
    assert "--url" not in used or used["--url"] == ["status"]  # status takes any /metrics URL, not the API's


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"orderbus {importlib.metadata.version('orderbus')}"


def test_role_lists_its_choices_and_refuses_others(tmp_path):
    rows = help_rows(("token",))
    text = " ".join(rows["--role"].split()).replace(" ", "")
    assert all(role in text for role in ROLES), text
    refused = CliRunner().invoke(
        app, ["token", "--data-dir", str(tmp_path), "--sub", "x", "--role", "chef", "--restaurant", "1"]
    )
    assert refused.exit_code == 2
    assert not (tmp_path / "jwt.key").exists()  # refused before the key was made
