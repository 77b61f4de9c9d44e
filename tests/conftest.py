from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine

from config.settings import Settings
from core.unit_of_work import UnitOfWork
from tests.nats import NatsBus
from tests.postgres import fresh_database, fresh_engine
from tests.support import App, Stack, Subscriber, TokenScan, sqlite_engine

# Property tests judge correctness, not speed: on a shared two-core machine the first draw of a
# strategy can take over a second, which is no defect of the code under test.
hypothesis_settings.register_profile("orderbus", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile("orderbus")


_skipped: list[str] = []
_token_scan = TokenScan()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "embedded_only(reason): the `stack` or `broker` of this test is the embedded one alone"
    )
    root = logging.getLogger()
    root.addHandler(_token_scan)
    root.setLevel(min(root.level, logging.INFO))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is not a passed test: the run fails if anything was skipped."""
    if _skipped and exitstatus == 0:
        session.exitstatus = 1
        print(f"\n{len(_skipped)} test(s) skipped, failing the run: {_skipped}")
    if _token_scan.leaks:
        session.exitstatus = 1
        print(f"\n{len(_token_scan.leaks)} log record(s) carried a token, failing the run:")
        for leak in _token_scan.leaks[:20]:
            print("  " + leak)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """A temporary SQLite file with the schema, on the same engine settings as production."""
    made = sqlite_engine(settings)
    yield made
    made.dispose()


@pytest.fixture
def uow(engine: Engine) -> Iterator[UnitOfWork]:
    """One unit of work for a service test; the test commits what it means to keep. From its first
    statement to its commit it holds the database's writer turn: other writers (the app) wait."""
    with UnitOfWork(engine) as unit:
        yield unit


@pytest.fixture
def app(settings: Settings, engine: Engine) -> App:
    """The REST app in this process: for what needs HTTP but no broker."""
    return App(settings, engine)


@pytest.fixture
def client(app: App) -> TestClient:
    """An anonymous client of the in-process app (paths below /api/v1)."""
    return app.http()


# The test files whose `stack` runs on both backends: the embedded broker over SQLite, and a three-node
# NATS cluster (our auth callout in front) over PostgreSQL. Every other `stack` is the embedded one.
BOTH_STACKS = {
    "tests.integration.test_tickets",
    "tests.integration.test_printer",
    "tests.integration.test_presence",
    "tests.integration.test_retained_rebuild",
    "tests.integration.test_scales",
    "tests.integration.test_tablet_events",
    "tests.integration.test_tablet_idempotency",
    "tests.integration.test_device_catchup",
    "tests.integration.test_device_refusal",
    "tests.integration.test_dead_letter",
    "tests.integration.test_largest_events",
    "tests.e2e.test_bus",
    "tests.e2e.test_dashboard",
    "tests.e2e.test_dashboard_rush",
    "tests.integration.test_ops_clients",
}
BACKENDS = ("embedded-sqlite", "nats-postgres")
# The security suite's ACL and token attack files, whose `broker` (a broker alone, no database) runs on both:
# ours, and node 0 of the session's NATS cluster with our responder (tests/security/conftest.py).
BOTH_ENGINES = {
    "tests.security.test_tokens",
    "tests.security.test_subscriptions",
    "tests.security.test_publishes",
    "tests.security.test_websocket",
}
ENGINES = ("embedded", "nats")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`stack` in BOTH_STACKS and `broker` in BOTH_ENGINES run twice; a test marked `embedded_only` (it reaches
    into the embedded broker, or has no NATS equivalent yet: the marker says which) runs on the embedded one alone."""
    if metafunc.definition.get_closest_marker("embedded_only"):
        return
    if "stack" in metafunc.fixturenames and metafunc.module.__name__ in BOTH_STACKS:
        metafunc.parametrize("stack", BACKENDS, indirect=True)
    if "broker" in metafunc.fixturenames and metafunc.module.__name__ in BOTH_ENGINES:
        metafunc.parametrize("broker", ENGINES, indirect=True)


@pytest.fixture(scope="session")
def nats_bus(tmp_path_factory) -> Iterator[NatsBus]:
    """One three-node cluster for every nats-postgres stack of the run (a cluster takes seconds to start)."""
    bus = NatsBus(tmp_path_factory.mktemp("natsbus"))
    try:
        yield bus
    finally:
        bus.close()


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path) -> Iterator[Stack]:
    if getattr(request, "param", "embedded-sqlite") == "embedded-sqlite":
        running = Stack(tmp_path / "data").start()
        yield running
        running.stop()
        return
    bus: NatsBus = request.getfixturevalue("nats_bus")
    with fresh_database("stack") as url:
        bus.prepare(tmp_path / "data")
        made = Stack(tmp_path / "data", **bus.overrides(url))
        bus.started(made)
        running = made.start()
        try:
            yield running
        finally:
            running.stop()


@pytest.fixture
def subscribers(stack: Stack) -> Iterator[list[Subscriber]]:
    """Subscribers made by a test, closed after it."""
    made: list[Subscriber] = []
    yield made
    for subscriber in made:
        subscriber.close()


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the whole run; each test opens its own context."""
    from tests.browser import chromium

    with chromium() as running:
        yield running


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    """A SQLite file as `orderbus up` makes it, or a fresh database on the real PostgreSQL server: for
    service tests whose locking or counting differs between the two."""
    if request.param == "sqlite":
        engine = sqlite_engine(Settings(data_dir=tmp_path / "data"))
        yield engine
        engine.dispose()
        return
    with fresh_engine("service") as (_url, engine):
        yield engine
