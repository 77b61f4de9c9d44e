"""The cluster's connections, as every node reports them (`$SYS.REQ.SERVER.PING.CONNZ`), and closing one
(`$SYS.REQ.SERVER.<server id>.KICK`): what the system account lets the responder see and do.

Used for revocations (`responder.Responder.recall`) and for operators (`clients.NatsClients`). A node
answers the PING with its first page; a node with more connections is asked for the rest by its id.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger("orderbus.callout")

KICK_SUBJECT = "$SYS.REQ.SERVER.{server_id}.KICK"
CONNZ_ALL = "$SYS.REQ.SERVER.PING.CONNZ"
CONNZ_ONE = "$SYS.REQ.SERVER.{server_id}.CONNZ"
CONNZ_PAGE = 1024


async def cluster_connections(system: Any, account: str, wait_seconds: float = 0.5) -> list[tuple[str, dict[str, Any]]]:
    """(server id, CONNZ entry) of every connection of `account` on the nodes that answer within
    `wait_seconds`, with their user names (`authorized_user`)."""
    inbox = system.new_inbox()
    replies = await system.subscribe(inbox)
    query = {"acc": account, "auth": True, "limit": CONNZ_PAGE}
    await system.publish(CONNZ_ALL, json.dumps(query).encode(), reply=inbox)
    pages: list[dict[str, Any]] = []
    deadline = asyncio.get_running_loop().time() + wait_seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            pages.append(json.loads((await replies.next_msg(timeout=left)).data))
        except TimeoutError:
            break
        except ValueError:
            log.warning("callout: unreadable CONNZ reply")
    await replies.unsubscribe()
    found: list[tuple[str, dict[str, Any]]] = []
    for page in pages:
        data = page.get("data") or {}
        server_id, connections = data.get("server_id"), list(data.get("connections") or [])
        offset = len(connections)
        while server_id and offset < int(data.get("total", 0)):  # the rest of a big server, page by page
            more = await system.request(
                CONNZ_ONE.format(server_id=server_id), json.dumps(query | {"offset": offset}).encode(), timeout=2
            )
            batch = (json.loads(more.data).get("data") or {}).get("connections") or []
            if not batch:
                break
            connections += batch
            offset += len(batch)
        if server_id:
            found += [(server_id, connection) for connection in connections if isinstance(connection, dict)]
    return found


async def kick(system: Any, server_id: str, cid: int) -> None:
    """Ask the node to close connection `cid`; raises when it does not answer within a second."""
    await system.request(KICK_SUBJECT.format(server_id=server_id), json.dumps({"cid": cid}).encode(), timeout=1)
