"""Bad configuration through the real `orderbus` console script: one line naming the file (or flag, or
variable) and what is wrong, exit 2, no traceback, nothing set up."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port

ORDERBUS = str(Path(sys.executable).parent / "orderbus")


def run(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORDERBUS_")}
    return subprocess.run(
        [ORDERBUS, *argv], capture_output=True, text=True, timeout=60, env={**clean, **(env or {})}, cwd=cwd
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line; exit 2, and neither a traceback nor a Rich panel anywhere."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr and "╭" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orderbus: error: "), result.stderr
    return lines[0].removeprefix("orderbus: error: ")


def up(tmp_path: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    ports = ["--http-port", str(free_port()), "--mqtt-port", str(free_port()), "--ws-port", str(free_port())]
    return run("up", "--data-dir", str(tmp_path / "data"), *ports, *argv, env=env)


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ("http_port = 8000\nmqtt_port = = 1\n", "not valid TOML: Invalid value (at line 2, column 13)"),
        ('[server\nhost = "x"\n', "not valid TOML"),
        ("http_port = 8000\n\xff\n", "not valid TOML"),
    ],
    ids=["double-equals", "unclosed-table", "not-utf8"],
)
def test_a_config_file_that_is_not_toml(tmp_path, toml, says):
    config = tmp_path / "orderbus.toml"
    config.write_bytes(toml.encode("latin-1"))
    line = one_line(up(tmp_path, "--config", str(config)))
    assert line.startswith(f"{config}: ") and says in line, line
    assert not (tmp_path / "data").exists()


def test_bad_values_in_a_config_file_one_line_per_setting(tmp_path):
    config = tmp_path / "orderbus.toml"
    config.write_text('data_dir = "%s"\nmqtt_max_packet_bytes = 10\nfrobnicate = true\n' % (tmp_path / "data"))
    result = run("up", "--config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"orderbus: error: {config}: mqtt_max_packet_bytes: Input should be greater than or equal to 1024 (got 10)",
        f"orderbus: error: {config}: frobnicate: unknown setting",
    ], result.stderr
    assert not (tmp_path / "data").exists()


def test_a_bad_value_names_the_flag_or_the_variable_it_came_from(tmp_path):
    line = one_line(run("broker", "--data-dir", str(tmp_path / "d"), env={"ORDERBUS_WS_PORT": "lots"}))
    assert line.startswith("ORDERBUS_WS_PORT: ws_port: Input should be a valid integer") and "(got 'lots')" in line
    line = one_line(run("up", "--http-port", "eighty"))
    assert line.startswith("orderbus up: ") and "'--http-port'" in line, line
    line = one_line(run("up", "--http-port", "99999"))
    assert line == "--http-port: http_port: Input should be less than or equal to 65535 (got 99999)"
    line = one_line(run("bridge", env={"ORDERBUS_METRICS_PORT": "-1"}))
    assert line == "ORDERBUS_METRICS_PORT: metrics_port: Input should be greater than or equal to 0 (got '-1')"
    line = one_line(run("up", "--broker", "nats://x:1", "--mqtt-tls", "--log-json", env={"ORDERBUS_DEMO": "maybe"}))
    assert line.startswith("ORDERBUS_DEMO: demo: Input should be a valid boolean"), line
    secret = one_line(run("token", "--sub", "a", "--role", "admin", env={"ORDERBUS_JWT_PREVIOUS_KEYS": "not-json"}))
    assert secret.startswith("ORDERBUS_JWT_PREVIOUS_KEYS: jwt_previous_keys: not valid JSON"), secret
    assert not (tmp_path / "d").exists()


def test_a_missing_config_file(tmp_path):
    line = one_line(up(tmp_path, "--config", str(tmp_path / "nope.toml")))
    assert line == f"{tmp_path / 'nope.toml'}: config file not found"
    line = one_line(run("token", "--sub", "a", "--role", "admin", env={"ORDERBUS_CONFIG": str(tmp_path)}))
    assert line == f"{tmp_path}: a directory, not a config file"


@pytest.mark.parametrize(
    ("acl", "says"),
    [
        ('[roles.admin]\nsubscribe = "restaurant/#"\n', "bad ACL policy: role 'admin': subscribe must be a list"),
        ("[roles.admin]\nsubscribe = [\n", "cannot read ACL policy: not valid TOML"),
        ('[roles.admin]\nsubscribe = ["a/#/b"]\n', "bad ACL policy: role 'admin': invalid pattern 'a/#/b'"),
        ("[people]\n", "bad ACL policy: unknown keys ['people']"),
    ],
    ids=["string", "not-toml", "bad-pattern", "unknown-key"],
)
@pytest.mark.parametrize("how", ["config", "env"])
def test_a_bad_acl_file(tmp_path, acl, says, how):
    policy = tmp_path / "acl.toml"
    policy.write_text(acl)
    if how == "config":
        config = tmp_path / "orderbus.toml"
        config.write_text(f'acl_policy = "{policy}"\n')
        result = up(tmp_path, "--config", str(config))
    else:
        ports = ["--mqtt-port", str(free_port()), "--ws-port", str(free_port())]
        result = run("broker", "--data-dir", str(tmp_path / "data"), *ports, env={"ORDERBUS_ACL_POLICY": str(policy)})
    line = one_line(result)
    assert line.startswith(f"{policy}: ") and says in line, line
    assert not (tmp_path / "data").exists()  # refused before the database or the key was made


def test_a_missing_acl_file(tmp_path):
    line = one_line(up(tmp_path, env={"ORDERBUS_ACL_POLICY": str(tmp_path / "none.toml")}))
    assert line == f"{tmp_path / 'none.toml'}: cannot read ACL policy: No such file or directory"


@pytest.mark.parametrize("command", [["up"], ["db", "upgrade"], ["token", "--sub", "a", "--role", "admin"]])
def test_a_data_directory_that_is_a_file(tmp_path, command):
    afile = tmp_path / "data"
    afile.write_text("not a directory\n")
    line = one_line(run(*command, "--data-dir", str(afile)))
    assert line == f"{afile}: not a directory (the data directory, set by --data-dir)"
    line = one_line(run(*command, env={"ORDERBUS_DATA_DIR": str(afile)}))
    assert line == f"{afile}: not a directory (the data directory, set by ORDERBUS_DATA_DIR)"
    line = one_line(run(*command, "--data-dir", str(afile / "sub")))
    assert line == f"{afile / 'sub'}: not a directory (the data directory, set by --data-dir, {afile} is a file)"
    assert afile.read_text() == "not a directory\n"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://u@localhost/orderbus", "no driver for mysql://u@localhost/orderbus: No module named"),
        ("postgresql+nosuchdriver://u@localhost/db", "is not a usable database URL"),
        ("nonsense", "is not a usable database URL"),
    ],
)
@pytest.mark.parametrize("command", ["up", "db upgrade"])
def test_a_database_url_whose_driver_is_missing(tmp_path, url, says, command):
    line = one_line(
        up(tmp_path, "--database-url", url) if command == "up" else run(*command.split(), "--database-url", url)
    )
    assert says in line and "--database-url" in line, line


def test_an_explicit_port_that_is_taken_fails_even_with_demo(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        for flag in ("--mqtt-port", "--http-port", "--ws-port"):
            ports = {"--mqtt-port": free_port(), "--http-port": free_port(), "--ws-port": free_port(), flag: port}
            argv = [word for pair in ports.items() for word in (pair[0], str(pair[1]))]
            line = one_line(run("up", "--demo", "--data-dir", str(tmp_path / "data"), *argv))
            assert line == f"port {port} on 127.0.0.1 is already in use; choose another with {flag}"
        config = tmp_path / "orderbus.toml"  # a port from the config file is chosen too: never replaced
        config.write_text(f"mqtt_port = {port}\n")
        result = run(
            "up", "--demo", "--config", str(config), "--data-dir", str(tmp_path / "data"),
            "--http-port", str(free_port()), "--ws-port", str(free_port()),
        )  # fmt: skip
        assert one_line(result) == f"port {port} on 127.0.0.1 is already in use; choose another with --mqtt-port"
