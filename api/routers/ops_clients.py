"""Connected MQTT clients for operators: the list, and disconnecting one.

- `GET /ops/clients`: client id, role, restaurant, address, connected since, queue depth. A
  super_admin sees every client; an admin sees their restaurant's only.
- `POST /ops/clients/{client_id}/disconnect`: closes the connection (its Last Will is published, as
  for any drop, so its presence reads `lost` until it returns). An admin may disconnect only their
  restaurant's clients: another restaurant's is 403 and nothing happens; a client that is not
  connected is 404. Every attempt is logged (who, which client, the outcome) and counted.

The clients come from `app.state.clients`, which the composition root wires to the broker this process
runs: the embedded broker's tables (`broker.clients.BrokerClients`), or on NATS the cluster's CONNZ
through the responder (`broker.nats.clients.NatsClients`). A process that runs no broker (a separate
`orderbus api`) answers 503 and says where to look.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, HTTPException, Path, Request, status
from prometheus_client import Counter
from pydantic import BaseModel

from api.deps import Caller, CurrentUser, Paging
from api.schemas import ErrorOut, Page

log = logging.getLogger("orderbus.ops")
ERRORS: dict[int | str, dict[str, Any]] = {403: {"model": ErrorOut}, 503: {"model": ErrorOut}}
router = APIRouter(prefix="/ops/clients", tags=["ops"], responses=ERRORS)

ADMIN_DISCONNECTS = Counter(
    "orderbus_admin_disconnects",
    "operator requests to disconnect an MQTT client, by outcome (done, refused, not_connected, unavailable)",
    ["outcome"],
)
for _outcome in ("done", "refused", "not_connected", "unavailable"):
    ADMIN_DISCONNECTS.labels(_outcome)

ClientId = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f+#/]+$", description="the MQTT client id")
]


class ClientOut(BaseModel):
    """One connected MQTT client, as the broker sees it now."""

    client_id: str
    role: str
    restaurant_id: int | None
    address: str | None
    listener: str | None  # tcp, ws, tls, wss; None on NATS, whose CONNZ shows both as MQTT
    connected_since: str | None
    queue_depth: int | None  # None where the broker does not say (NATS: the session's JetStream consumer)
    inflight: int | None
    persistent: bool | None


class Clients(Protocol):
    def list(self) -> list[dict[str, Any]]: ...
    def disconnect(self, client_id: str) -> bool: ...


def _clients(request: Request) -> Clients:
    clients = getattr(request.app.state, "clients", None)
    if clients is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the client list is read from the broker this process runs, and it runs none: ask the process that "
            "runs the broker or the responder (orderbus up), or the NATS nodes' /connz monitoring endpoint",
        )
    return clients


def _operator(caller: Caller) -> None:
    if caller.role not in ("admin", "super_admin"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {caller.role} may not do this")


def _visible(caller: Caller, client: dict[str, Any]) -> bool:
    return caller.role == "super_admin" or (
        caller.restaurant_id is not None and client.get("restaurant_id") == caller.restaurant_id
    )


@router.get("")
def list_clients(request: Request, caller: CurrentUser, window: Paging) -> Page[ClientOut]:
    """The connected clients this caller may see, by client id."""
    _operator(caller)
    seen = [ClientOut(**client) for client in _clients(request).list() if _visible(caller, client)]
    end = None if window.limit is None else window.skip + window.limit
    return Page(data=seen[window.skip : end], count=len(seen))


@router.post("/{client_id}/disconnect")
def disconnect_client(request: Request, caller: CurrentUser, client_id: ClientId) -> dict[str, Any]:
    """Close one client's connection; the device may reconnect (revoke its token to keep it out)."""
    _operator(caller)
    try:
        clients = _clients(request)
    except HTTPException:
        ADMIN_DISCONNECTS.labels("unavailable").inc()
        raise
    client = next((c for c in clients.list() if c["client_id"] == client_id), None)
    if client is not None and not _visible(caller, client):
        ADMIN_DISCONNECTS.labels("refused").inc()
        log.warning(
            "disconnect refused client_id=%r by=%s role=%s: not their restaurant", client_id, caller.sub, caller.role
        )
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not your restaurant's client")
    if client is None or not clients.disconnect(client_id):
        ADMIN_DISCONNECTS.labels("not_connected").inc()
        log.info("disconnect client_id=%r by=%s: not connected", client_id, caller.sub)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no connected client {client_id!r}")
    ADMIN_DISCONNECTS.labels("done").inc()
    log.warning("disconnect client_id=%r by=%s role=%s: done", client_id, caller.sub, caller.role)
    return {"client_id": client_id, "disconnected": True}
