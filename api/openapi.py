"""The API's OpenAPI conventions, applied to every route the app has, including routes added later.

- operation ids are `{tag}-{name}` (`orders-list_orders`), as in FastAPI's full-stack template: what a
  generated client names its methods after, so they are unique and stable;
- the errors an operation can answer are documented from what the document already says of it, so a
  new router gets them without repeating them: 401 where it takes a bearer token (its `security`),
  403 where that token must also be allowed on what the path names (another restaurant, another
  device, a role without the right), 404 where the path names something, 409 where an authenticated
  write to something the path names can conflict with its current state (`DomainError`, an
  idempotency key in use). A route that answers one of these itself says so with `errors(...)`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.utils import generate_unique_id

from api.schemas import ErrorOut

WRITES = {"post", "put", "patch", "delete"}
DESCRIPTIONS = {
    400: "The request is well formed but cannot be done as asked (e.g. a wrong current password)",
    401: "No bearer token, or one that is invalid, expired, revoked or for another audience",
    403: "The caller may not do this here (another restaurant or device, or a role without this right)",
    404: "What the path names does not exist",
    409: "The change conflicts with the current state (an order's status, the stock, a duplicate, a key in use)",
    429: "Too many failed attempts: wait the `Retry-After` header's seconds",
}
ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def operation_id(route: APIRoute) -> str:
    """`{tag}-{name}` for a route with a tag (every documented one: tests/integration/test_openapi.py);
    FastAPI's own id for the undocumented pages (/docs) that have none."""
    return f"{route.tags[0]}-{route.name}" if route.tags else generate_unique_id(route)


def errors(*codes: int, why: str | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that answers these error codes itself (not through a dependency);
    `why` says when, where the general description would mislead."""
    return {code: {"model": ErrorOut, "description": why or DESCRIPTIONS[code]} for code in codes}


def error_codes(method: str, operation: dict[str, Any]) -> set[int]:
    """The error codes an operation of the document can answer, from its security, path and method."""
    authenticated = bool(operation.get("security"))
    named = any(parameter["in"] == "path" for parameter in operation.get("parameters", []))
    codes = {401} if authenticated else set()
    if authenticated and named:
        codes.add(403)
    if named:
        codes.add(404)
    if authenticated and named and method in WRITES:
        codes.add(409)
    return codes


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """The document with each operation's error responses added (those it declares itself are kept)."""
    schema.setdefault("components", {}).setdefault("schemas", {}).setdefault("ErrorOut", ErrorOut.model_json_schema())
    for operations in schema["paths"].values():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            for code in sorted(error_codes(method, operation)):
                content = {"application/json": {"schema": ERROR_REF}}
                responses.setdefault(str(code), {"description": DESCRIPTIONS[code], "content": content})
    return schema


def install(app: FastAPI) -> None:
    """Serve the document with the errors documented: FastAPI builds it, then `document_errors` adds to it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        return document_errors(build())

    app.openapi = openapi  # type: ignore[method-assign]
