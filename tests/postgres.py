"""PostgreSQL for tests: a database made for the caller and dropped after it, on a real server.

The server is ORDERBUS_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/postgres, the
local server CI uses). When it does not answer, the test fails with a line saying what to start:
a database test that cannot reach its database is a failure, never a skip.

A test that kills the server needs one of its own (`private_server`): never the shared one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, make_url

from scripts.ports import free_port

SERVER = os.environ.get("ORDERBUS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = "orderbus_t_"  # every database the tests make starts with this; `test` is never touched


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {SERVER} does not answer ({str(exc).strip().splitlines()[0]}): start it, or set "
            "ORDERBUS_TEST_POSTGRES to a server where this user may CREATE DATABASE",
            pytrace=False,
        )


@contextlib.contextmanager
def fresh_database(label: str = "db") -> Iterator[str]:
    """Yields the SQLAlchemy URL (postgresql+psycopg://…) of a new empty database, dropped afterwards."""
    name = f"{PREFIX}{label}_{secrets.token_hex(5)}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(SERVER).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    finally:
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_engine(label: str = "db") -> Iterator[tuple[str, Engine]]:
    """A new empty database with the schema made, its URL and an engine on it; dropped afterwards."""
    from core.db import create_schema, make_engine

    with fresh_database(label) as url:
        engine = make_engine(url)
        create_schema(engine)
        try:
            yield url, engine
        finally:
            engine.dispose()


BIN = Path(os.environ.get("ORDERBUS_TEST_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))


class PrivateServer:
    """A PostgreSQL server of the test's own, on a free port, to kill -9 and start again.

    Its binaries come from BIN (Debian's postgresql-15 by default). PostgreSQL refuses to run as
    root, so under root the server runs as the `postgres` user, its data directory (under /tmp: the
    pytest tmp_path of root is closed to other users) owned by that user. Started in a session of
    its own, so `kill()` takes the postmaster and every backend at once, as a machine losing power
    would, and the next `start()` runs crash recovery on the same data.
    """

    def __init__(self) -> None:
        for tool in ("initdb", "postgres"):
            if not (BIN / tool).exists():
                pytest.fail(
                    f"{BIN / tool} not found: install postgresql-15 (apt-get install postgresql-15), or set "
                    "ORDERBUS_TEST_POSTGRES_BIN to a directory with initdb and postgres",
                    pytrace=False,
                )
        self.root = Path(tempfile.mkdtemp(prefix="orderbus-pg-"))
        self.data_dir, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.process: subprocess.Popen[bytes] | None = None
        if self.user is not None:
            os.chown(self.root, pwd.getpwnam(self.user).pw_uid, pwd.getpwnam(self.user).pw_gid)
        initdb = [str(BIN / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        done = subprocess.run(initdb, user=self.user, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"initdb failed: {done.stderr.strip()[-500:]}", pytrace=False)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str = "orderbus") -> str:
        """The SQLAlchemy URL of `database` on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start (or start again) and wait until it takes connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        command = [str(BIN / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        command += ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}"]
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(command, user=self.user, stdout=sink, stderr=sink, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.admin_url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                assert self.process is not None
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = self.log.read_text(errors="replace")[-800:]
                    pytest.fail(f"the private PostgreSQL on port {self.port} did not start: {tail}", pytrace=False)
                time.sleep(0.1)

    def kill(self) -> None:
        """kill -9 of the postmaster and all its backends (its own process group)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def create_database(self, name: str = "orderbus") -> str:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # a fast shutdown (SIGTERM waits for clients to leave)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_server() -> Iterator[PrivateServer]:
    """A running `PrivateServer`, stopped and its files removed afterwards."""
    server = PrivateServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
