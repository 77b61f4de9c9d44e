"""Where a local NATS cluster lives: the data directory's `cluster.json` (ports chosen at the first start,
so a restart finds the same cluster at the same addresses, and the development password) and the nodes
it describes, with their addresses. Nothing here starts a process (that is cluster.py)."""

from __future__ import annotations

import json
import random
import secrets
import socket
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from broker.nats.conf import NodePorts
from broker.nats.server import ClusterError

LAYOUT_FILE = "cluster.json"
DEV_USER = "dev"
MAX_NODES = 7


def check_node_count(nodes: int) -> None:
    """One node, or an odd number up to MAX_NODES: JetStream needs a majority of its nodes, and an even
    count only adds a node that may fail without adding one that may be lost (2 nodes stop at the
    first failure, as 1 does; 4 survive one, as 3 do)."""
    if nodes < 1 or nodes > MAX_NODES or (nodes > 1 and nodes % 2 == 0):
        raise ClusterError(
            f"--nodes {nodes}: use 1, or an odd number up to {MAX_NODES} (JetStream needs a majority: "
            "an even count survives no more failures than one node fewer)"
        )


@dataclass(frozen=True)
class Layout:
    """What is chosen once and remembered in the data directory."""

    host: str
    ports: list[NodePorts]
    password: str  # the development user's (`password_auth`); unused when the caller passes its own auth

    @property
    def names(self) -> list[str]:
        return [f"n{index + 1}" for index in range(len(self.ports))]

    @classmethod
    def load_or_create(cls, data_dir: Path, nodes: int, host: str, pick_port: Callable[[], int]) -> Layout:
        path = data_dir / LAYOUT_FILE
        if path.exists():
            layout = cls.load(data_dir)
            if len(layout.ports) != nodes:
                raise ClusterError(
                    f"{data_dir} holds a {len(layout.ports)}-node cluster: use --nodes {len(layout.ports)}, "
                    "or another --data-dir"
                )
            return layout
        ports = [NodePorts(*(pick_port() for _ in range(5))) for _ in range(nodes)]
        layout = cls(host=host, ports=ports, password=secrets.token_urlsafe(18))
        path.write_text(json.dumps(asdict(layout), indent=2) + "\n")
        path.chmod(0o600)
        return layout

    @classmethod
    def load(cls, data_dir: Path) -> Layout:
        path = data_dir / LAYOUT_FILE
        try:
            raw = json.loads(path.read_text())
            return cls(host=raw["host"], ports=[NodePorts(**p) for p in raw["ports"]], password=raw["password"])
        except FileNotFoundError:
            hint = f"start one with `orderbus cluster up --data-dir {data_dir}`"
            raise ClusterError(f"no cluster in {data_dir}: {hint}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ClusterError(f"{path} is unreadable ({exc}): remove it to choose new ports") from None


@dataclass
class Node:
    index: int
    name: str
    host: str
    ports: NodePorts
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.host}:{self.ports.mqtt}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ports.websocket}/mqtt"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.ports.monitor}"

    @property
    def nats_url(self) -> str:
        return f"nats://{self.host}:{self.ports.client}"

    @property
    def log(self) -> Path:
        return self.directory / "nats.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def describe(data_dir: Path) -> list[Node]:
    """The nodes of the cluster in `data_dir` as remembered there, for reading their endpoints."""
    layout = Layout.load(data_dir)
    return [
        Node(index, name, layout.host, ports, data_dir / name)
        for index, (name, ports) in enumerate(zip(layout.names, layout.ports, strict=True))
    ]


def port_free(host: str, port: int) -> bool:
    """Nobody listens on host:port (SO_REUSEADDR as nats-server binds, so old TIME_WAIT connections do not count)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range (a port from bind(0) may be taken a moment later by
    any outgoing connection's source port), never the same one twice in this process."""
    try:
        low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low_ephemeral = 32768
    low = max(1024, low_ephemeral - 12000)
    for _ in range(1000):
        port = random.randrange(low, low_ephemeral)
        if port not in _handed_out and port_free(host, port):
            _handed_out.add(port)
            return port
    raise ClusterError(f"no free port between {low} and {low_ephemeral} on {host}")
