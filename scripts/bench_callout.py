"""Where one auth-callout decision spends its time (issue 13, the reconnect storm): `Decider.decide` on an
allowed printer login, then each stage alone, as microseconds per call (timeit, `--n` calls each).

    python scripts/bench_callout.py [--n 2000]

No NATS, no database: the request is signed here by a server key of our own, as nats-server signs its.
Not a test: no assertions. Numbers depend on the machine's load; docs/benchmarks.md (issue 13, 5b).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker.nats import nkeyjwt
from broker.nats.callout import Decider, permissions
from broker.policy import Policy
from config import DEFAULT_ACL_POLICY
from core.tokens import TokenService


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="calls per stage")
    n = parser.parse_args().n
    logging.disable(logging.INFO)  # a log line per decision would be measured too
    tokens, policy = TokenService(b"k" * 32), Policy.load(DEFAULT_ACL_POLICY)
    account = nkeyjwt.new_seed("account")
    server = bytes(nkeyjwt.nkeys.encode_seed(b"n" * 32, nkeyjwt.nkeys.PREFIX_BYTE_SERVER))
    moment = time.time()
    token = tokens.issue(sub="p1", role="printer", rid=7, audience="mqtt", ttl_seconds=3600, extra={"station": "grill"})
    body: dict[str, Any] = {
        "aud": "nats-authorization-request",
        "sub": "A",
        "exp": int(moment) + 2,
        "nats": {
            "type": "authorization_request",
            "version": 2,
            "server_id": {"id": nkeyjwt.public_key_of(server)},
            "user_nkey": nkeyjwt.public_key_of(nkeyjwt.new_seed("user")),
            "client_info": {"type": "mqtt", "mqtt_id": "p1", "id": 1},
            "connect_opts": {"pass": token, "auth_token": token},
        },
    }
    request = nkeyjwt.encode(body, server).encode()
    decider = Decider(tokens, policy, lambda _claims: False, account, now=lambda: moment)
    claims = tokens.verify(token, audience="mqtt")
    grants = policy.grants(claims)

    def stage(label: str, call: Callable[[], object]) -> None:
        print(f"{label:52s} {timeit.timeit(call, number=n) / n * 1e6:8.1f} us", flush=True)

    assert decider.decide(request).result == "allowed"  # the loop below must measure an admission
    stage("decide, whole (one allowed login)", lambda: decider.decide(request))
    stage(
        "request JWT verify (ed25519, nkeyjwt.decode)",
        lambda: nkeyjwt.decode(request, issuer_role="server", kind="authorization_request", now=moment, leeway=1),
    )
    stage("our token verify (PyJWT HS256)", lambda: tokens.verify(token, audience="mqtt"))
    stage("denylist check (an in-memory set's lookup)", lambda: decider.refuses(claims))
    stage("ACL grants (policy.grants)", lambda: policy.grants(claims))
    stage("grants -> NATS subjects (permissions)", lambda: permissions(grants))
    stage(
        "one nkey JWT signed (nkeyjwt.encode; two per login)",
        lambda: nkeyjwt.encode({"sub": "U", "nats": {"type": "user"}}, account, now=moment),
    )
    stage("the deadline look of a request (past_deadline)", lambda: decider.past_deadline(request))
    print(f"load average: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main()
