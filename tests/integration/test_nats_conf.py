"""The NATS configuration we render (broker/nats/conf.py) and ship (config/nats/) is what nats-server 2.15.1
accepts: `nats-server -t` parses a file, loads its certificates and refuses an unknown key, without starting."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nkeys

from broker.nats.conf import NatsLimits, NodePorts, password_auth, render_node
from broker.nats.server import server_binary
from tests.certificates import issued, self_signed, write_pem

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "nats"


def config_test(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(server_binary()), "-t", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def _ports(base: int) -> NodePorts:
    return NodePorts(client=base, cluster=base + 1, mqtt=base + 2, websocket=base + 3, monitor=base + 4)


def test_rendered_node_configuration_is_accepted(tmp_path: Path) -> None:
    """Every key we write exists in 2.15.1 (default_max_consumers, consumer_inactive_threshold, …): one node
    of three, and a single node, which has no cluster block."""
    nodes = [_ports(20000 + 10 * n) for n in range(3)]
    three = render_node(
        name="n1",
        host="127.0.0.1",
        ports=nodes[0],
        peers=nodes[1:],
        store_dir=tmp_path / "js",
        auth=password_auth("dev", 'pa"ss\\word'),  # quoting survives awkward characters
        stream_replicas=3,
    )
    one = render_node(
        name="solo", host="127.0.0.1", ports=nodes[0], peers=[], store_dir=tmp_path / "js", auth=password_auth("u", "p")
    )
    assert "cluster {" in three and "cluster {" not in one
    for text in (three, one):
        path = tmp_path / "node.conf"
        path.write_text(text)
        result = config_test(path)
        assert result.returncode == 0, result.stderr + result.stdout

    path.write_text(three + "\nmqtt_max_everything: 1\n")  # what a key NATS does not know does to start-up
    refused = config_test(path)
    assert refused.returncode != 0 and "unknown field" in refused.stderr


def _certificates(directory: Path) -> None:
    """ca.pem, server.pem and server-key.pem as the examples expect them under /etc/nats/tls/."""
    directory.mkdir(parents=True)
    ca = self_signed("orderbus test CA")
    names = [f"nats-{n}.internal" for n in (1, 2, 3)] + ["127.0.0.1"]
    write_pem(directory / "ca.pem", ca)
    write_pem(directory / "server.pem", issued(ca, "nats", names), directory / "server-key.pem")


def test_production_examples_parse(tmp_path: Path) -> None:
    """config/nats/n1..n3.conf with their includes, certificates where the placeholders point (here under
    tmp) and the two values from the environment: every node's file is valid as written."""
    root = tmp_path / "etc"
    _certificates(root / "tls")
    for example in EXAMPLES.glob("*.conf"):
        text = example.read_text().replace("/etc/nats/", f"{root}/").replace("/var/lib/nats/", f"{tmp_path}/var/")
        (root / example.name).write_text(text)
    issuer = nkeys.from_seed(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT)).public_key.decode()
    env = {"ORDERBUS_CALLOUT_ISSUER": issuer, "ORDERBUS_CALLOUT_PASSWORD": "a-long-random-secret"}
    nodes = sorted(root.glob("n*.conf"))
    assert [n.name for n in nodes] == ["n1.conf", "n2.conf", "n3.conf"]
    for node in nodes:
        result = config_test(node, env)
        assert result.returncode == 0, f"{node.name}: {result.stderr}{result.stdout}"

    missing = config_test(nodes[0], {"ORDERBUS_CALLOUT_ISSUER": issuer})  # the password left out of the environment
    assert missing.returncode != 0 and "ORDERBUS_CALLOUT_PASSWORD" in missing.stderr

    shutil.rmtree(root / "tls")
    no_certificates = config_test(nodes[0], env)
    assert no_certificates.returncode != 0 and "server.pem" in no_certificates.stderr


def test_production_limits_are_the_local_clusters() -> None:
    """The examples and the local cluster share their limits: a change to one that forgets the other fails."""
    shared = (EXAMPLES / "cluster.conf").read_text()
    limits = NatsLimits()

    def value(key: str) -> str:
        match = re.search(rf"^\s*(?:limits \{{ )?{key}: \"?([^\s\"}}]+)", shared, re.MULTILINE)
        assert match, key
        return match.group(1)

    assert int(value("max_payload")) == limits.max_payload
    assert int(value("max_pending")) == limits.max_pending
    assert int(value("max_connections")) == limits.max_connections
    assert int(value("max_ack_pending")) == limits.mqtt_max_ack_pending
    assert value("ack_wait") == limits.mqtt_ack_wait
    assert value("consumer_inactive_threshold") == limits.mqtt_consumer_inactive_threshold
    assert int(value("default_max_consumers")) == limits.default_max_consumers
    assert value("handshake_timeout") == limits.websocket_handshake_timeout
    assert value("consumer_memory_storage") == str(limits.mqtt_consumer_memory_storage).lower()
    assert value("js_api_timeout") == limits.mqtt_js_api_timeout
