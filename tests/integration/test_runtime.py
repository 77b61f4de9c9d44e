"""The runtime's start-up when a port is taken after the pre-flight check (a race with another process)."""

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

import cli.runtime
from cli.runtime import Parts, PortInUse, Runtime
from config.settings import Settings
from tests.support import free_port


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_an_http_port_taken_after_the_check_fails_start_up_cleanly(tmp_path, monkeypatch):
    monkeypatch.setattr(cli.runtime, "check_ports", lambda host, ports: None)  # lose the race on purpose
    settings = Settings(data_dir=tmp_path, http_port=free_port(), mqtt_port=free_port(), ws_port=free_port())
    runtime = Runtime(Parts.build(settings))

    async def start() -> None:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", settings.http_port))
            squatter.listen()
            with pytest.raises(PortInUse, match=f"{settings.http_port}.*--http-port"):
                await runtime.start()
        await asyncio.sleep(0)  # the loop is still alive: uvicorn's SystemExit did not escape

    with ThreadPoolExecutor(1) as thread:  # a loop of its own: Playwright's sync API may own this thread's loop
        thread.submit(asyncio.run, start()).result(60)
    assert runtime.broker is None
    assert not _listening(settings.mqtt_port) and not _listening(settings.ws_port)


def test_free_ports_are_outside_the_ephemeral_range_and_never_repeat():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low = int(f.read().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= port < low for port in ports)
