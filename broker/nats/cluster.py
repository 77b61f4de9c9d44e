"""A local NATS cluster: N nats-server processes with JetStream on disk, MQTT and MQTT over WebSocket.

For development (`orderbus cluster up`), for the tests (tests/nats.py) and as the shape of production
(config/nats/). Everything lives in one data directory (layout.py): per node `nN/nats.conf`, rendered at
each start, `nN/jetstream/` and `nN/nats.log`. A node is ready when its /healthz answers 200, it has
routes to every other running node, the JetStream meta group has a leader and every stream and consumer
it replicates has a leader that is alive.

Measured here (2 shared cores, three nodes): a fresh cluster is ready in 0.4-1 s; started again on its
own data 5-8 s (the JetStream meta group elects a leader again); after a kill -9 the two others are
ready in 0.1-7 s (0.1 when the dead node led nothing), and the node rejoins in 2-5 s.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from broker.nats.conf import NatsLimits, password_auth, render_node
from broker.nats.layout import DEV_USER, LAYOUT_FILE, Layout, Node, check_node_count, free_port, port_free
from broker.nats.server import ClusterError, server_binary

WARM_UP_ATTEMPT = 35.0
"""Seconds one warm-up CONNECT may wait for its CONNACK: a node holds a CONNECT for at most its MQTT
JetStream API timeout (`NatsLimits.mqtt_js_api_timeout`, 30 s) before it answers or closes."""


class PortTaken(ClusterError):
    pass


class NodeFailed(ClusterError):
    pass


class Cluster:
    """N nodes in one data directory. Not thread-safe: one owner starts, kills and stops them."""

    def __init__(
        self,
        data_dir: Path,
        nodes: int = 3,
        *,
        auth: str | None = None,
        host: str = "127.0.0.1",
        limits: NatsLimits = NatsLimits(),
        binary: Path | None = None,
        pick_port: Callable[[], int] | None = None,
    ) -> None:
        check_node_count(nodes)
        if data_dir.exists() and not data_dir.is_dir():
            raise ClusterError(f"--data-dir {data_dir} is a file: give a directory (it is created if missing)")
        self.binary = server_binary(binary)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ClusterError(f"--data-dir {data_dir}: cannot create it ({exc.strerror})") from None
        self.data_dir = data_dir
        self.layout = Layout.load_or_create(data_dir, nodes, host, pick_port or free_port)
        self._default_auth = auth is None
        self.auth = auth if auth is not None else password_auth(DEV_USER, self.layout.password)
        self.limits = limits
        self.nodes = [
            Node(index, name, self.layout.host, ports, data_dir / name)
            for index, (name, ports) in enumerate(zip(self.layout.names, self.layout.ports, strict=True))
        ]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def auth_callout(self) -> bool:
        """Clients are logged in by an auth callout (the caller's `auth`), not the development user."""
        return not self._default_auth

    @property
    def password(self) -> str:
        return self.layout.password

    def start(self, timeout: float = 60.0) -> float:
        """Start every node that is not running and wait until all are ready; returns the seconds it took.

        With the development accounts (no `auth` given) it also makes the first MQTT connection on each
        node (`warm_up`); with other auth the caller does, once its responder answers."""
        began = time.monotonic()
        stopped = [node for node in self.nodes if not node.running]
        for node in stopped:
            self._check_ports_free(node)
        try:
            for node in stopped:
                self._spawn(node)
            self.wait_ready(timeout)
            if self._default_auth:
                self.warm_up(DEV_USER, self.password, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - began

    def warm_up(self, username: str, password: str, timeout: float = 60.0) -> None:
        """One MQTT connection to each running node in turn, each waiting for its CONNACK.

        A fresh cluster makes the account's MQTT streams on the first MQTT CONNECT; connections arriving
        on several nodes during that time waited and failed ("lookup sessions stream … timeout after 5s",
        seen here with three clients at once): one client first, node after node, makes it a quiet start."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while node.running:
                # One attempt waits at most a little over the node's JetStream API timeout (how long it may
                # hold a CONNECT); a closed connection is tried again at once, so one refusal cannot use up
                # the whole budget (it did: "n2 refuses MQTT connections (CONNACK None)" in CI).
                attempt = min(WARM_UP_ATTEMPT, max(0.1, deadline - time.monotonic()))
                code = mqtt_connect_once(node, username, password, timeout=attempt)
                if code == 0:
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"node {node.name} refuses MQTT connections (CONNACK {code}): see {node.log}")
                time.sleep(0.2)

    def restart(self, index: int, timeout: float = 60.0) -> None:
        """Start one node again (after `kill`) and wait until the cluster is whole (and, with the
        development accounts, the node has taken its first MQTT connection, as at `start`)."""
        node = self.nodes[index]
        if node.running:
            raise ClusterError(f"node {node.name} is running")
        self._check_ports_free(node)
        self._spawn(node)
        self.wait_ready(timeout)
        if self._default_auth:
            self.warm_up(DEV_USER, self.password, timeout=timeout)

    def kill(self, index: int) -> None:
        """kill -9: no goodbye to the routes, no flush of JetStream's files (the crash the tests inject)."""
        node = self.nodes[index]
        if node.process is not None:
            node.process.kill()
            node.process.wait(10)
            node.process = None

    def reap(self) -> list[tuple[Node, int]]:
        """The nodes that exited on their own since the last look, with their exit codes."""
        exited = []
        for node in self.nodes:
            if node.process is not None and (code := node.process.poll()) is not None:
                exited.append((node, code))
                node.process = None
        return exited

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every running node (nats-server shuts down cleanly on it), SIGKILL those that linger."""
        for node in self.nodes:
            if node.running:
                assert node.process is not None
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(grace)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(10)
                node.process = None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every running node healthy and routed to every other running one, with a JetStream meta leader."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as http:
            while True:
                problems = [problem for node in self.nodes if (problem := self._not_ready(http, node))]
                if not problems:
                    return
                if time.monotonic() > deadline:
                    raise ClusterError(f"cluster not ready after {timeout:.0f}s: {problems[0]}")
                time.sleep(0.1)

    def _not_ready(self, http: httpx.Client, node: Node) -> str | None:
        """Why `node` is not ready yet (None: it is); raises if its process has exited."""
        if node.process is None:
            return None  # killed on purpose: the others must do without it
        if node.process.poll() is not None:
            raise NodeFailed(
                f"node {node.name} exited with code {node.process.returncode}: {last_error(node.log)} "
                f"(config: {node.directory / 'nats.conf'}, log: {node.log})"
            )
        try:
            health = http.get(f"{node.monitor_url}/healthz")
            if health.status_code != 200:
                return f"{node.name}: {health.json().get('error', health.status_code)}"
            if len(self.nodes) == 1:
                return None
            routed = {route.get("remote_name") for route in http.get(f"{node.monitor_url}/routez").json()["routes"]}
            others = [other for other in self.nodes if other.running and other is not node]
            missing = [other.name for other in others if other.name not in routed]
            if missing:
                return f"{node.name}: no route to {', '.join(missing)} yet"
            jsz = http.get(f"{node.monitor_url}/jsz?accounts=true&streams=true&consumers=true").json()
            if not (jsz.get("meta_cluster") or {}).get("leader"):
                return f"{node.name}: no JetStream meta leader yet"
            return self._leaderless(node, jsz)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return f"{node.name}: monitoring endpoint not answering ({type(exc).__name__})"

    def _leaderless(self, node: Node, jsz: dict[str, Any]) -> str | None:
        """A stream or consumer replicated here whose leader is not a running node.

        Right after a kill -9 the survivors still name the dead node as leader and /healthz answers 200
        for a moment: an MQTT QoS 1 publish then waited for a stream leader and got no PUBACK (seen
        here). Ready means every MQTT stream and session consumer has a live leader again."""
        alive = {other.name for other in self.nodes if other.running}
        for account in jsz.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                for asset in [stream, *(stream.get("consumer_detail") or [])]:
                    leader = (asset.get("cluster") or {}).get("leader")
                    if leader not in alive:
                        return f"{node.name}: {stream['name']} {asset['name']} has no live leader ({leader or 'none'})"
        return None

    def _check_ports_free(self, node: Node) -> None:
        if _answers_as(node):
            raise PortTaken(
                f"node {node.name} of {self.data_dir} is already running (another `orderbus cluster up`?): "
                f"see `orderbus cluster status --data-dir {self.data_dir}`"
            )
        for kind, port in asdict(node.ports).items():
            if not port_free(node.host, port):
                raise PortTaken(
                    f"port {port} ({node.name} {kind}) on {node.host} is in use: stop what listens there, "
                    f"or remove {self.data_dir / LAYOUT_FILE} to choose new ports"
                )

    def _spawn(self, node: Node) -> None:
        node.directory.mkdir(parents=True, exist_ok=True)
        peers = [other.ports for other in self.nodes if other is not node]
        conf = node.directory / "nats.conf"
        conf.write_text(
            render_node(
                name=node.name,
                host=node.host,
                ports=node.ports,
                peers=peers,
                store_dir=node.directory / "jetstream",
                auth=self.auth,
                limits=self.limits,
                stream_replicas=min(len(self.nodes), 3),
            )
        )
        conf.chmod(0o600)  # it carries the development password, or the responder's credentials
        with node.log.open("ab") as log:
            log.write(f"--- orderbus: starting {node.name} at {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n".encode())
            log.flush()
            node.process = subprocess.Popen(
                [str(self.binary), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C at the terminal reaches `cluster up`, which stops the nodes in order
                preexec_fn=_die_with_parent,
            )


def _answers_as(node: Node) -> bool:
    """A nats-server of this name already answers on the node's monitoring port."""
    try:
        varz = httpx.get(f"{node.monitor_url}/varz", timeout=1.0).json()
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(varz, dict) and varz.get("server_name") == node.name


def mqtt_connect_once(node: Node, username: str, password: str, timeout: float) -> int | None:
    """CONNECT (MQTT 3.1.1, clean session) and DISCONNECT; the CONNACK return code, None when none came."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"orderbus-warm-up-{node.name}", protocol=mqtt.MQTTv311)
    client.username_pw_set(username, password)
    codes: list[int] = []
    client.on_connect = lambda _c, _u, _f, reason, _p: codes.append(reason.value)
    try:
        client.connect(node.host, node.ports.mqtt, keepalive=10)
    except OSError:
        return None
    deadline = time.monotonic() + timeout
    while not codes and time.monotonic() < deadline:
        if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
            break  # the node closed the connection (a CONNECT it could not serve): the caller tries again
    client.disconnect()
    return codes[0] if codes else None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies (Linux), so a killed
    `cluster up` or test run leaves no nodes behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def last_error(log: Path) -> str:
    """The line of a node's log that says why it stopped (its last error or fatal line, or its last line)."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    flagged = [line for line in lines if "[FTL]" in line or "[ERR]" in line or line.startswith("nats-server:")]
    return (flagged or lines or ["empty log"])[-1]


def node_status(node: Node, http: httpx.Client) -> dict[str, Any]:
    """What a node's monitoring endpoint says, for `orderbus cluster status`; `up` False when it does not answer."""
    try:
        varz = http.get(f"{node.monitor_url}/varz").json()
        jsz = http.get(f"{node.monitor_url}/jsz").json()
        healthy = http.get(f"{node.monitor_url}/healthz").status_code == 200
    except (httpx.HTTPError, ValueError):
        return {"name": node.name, "up": False}
    return {
        "name": node.name,
        "up": True,
        "healthy": healthy,
        "version": varz.get("version"),
        "connections": varz.get("connections"),
        "routes": varz.get("routes"),
        "leader": (jsz.get("meta_cluster") or {}).get("leader"),
        "streams": jsz.get("streams"),
        "consumers": jsz.get("consumers"),
    }
