"""The API's documentation and list conventions, read from the served OpenAPI document and checked
against what the app answers: `{tag}-{name}` operation ids, readable names, documented 401/403/404/409,
`skip`/`limit` with a total count on every list, and /docs and /redoc that need no internet."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from config.settings import Settings
from tests.postgres import fresh_engine
from tests.support import App

OPERATION_ID = re.compile(r"^[a-z][a-z-]*-[a-z][a-z0-9_]*$")
UGLY = re.compile(r"\b(rows?|row_id)\b", re.IGNORECASE)
WRITES = {"post", "put", "patch", "delete"}
# The catch-up feeds are read by seq (`after`), not by page: a page of a list that grows at its end
# would skip or repeat events. Every other GET that answers many things is a page.
FEEDS = {"events-read_events", "device-catchup-read_device_events"}
BAD_PAGES: list[dict[str, Any]] = [
    {"limit": 0},
    {"limit": 501},
    {"limit": 100000},
    {"limit": -1},
    {"skip": -1},
    {"skip": "x"},
    {"limit": "ten"},
    {"limit": ""},
    {"skip": 2**63},
]


@pytest.fixture
def spec(client) -> dict[str, Any]:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def operations(spec: dict[str, Any]):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def path_params(operation: dict[str, Any]) -> list[str]:
    return [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]


def test_every_operation_id_is_tag_dash_name_and_unique(spec):
    ids = [operation["operationId"] for _, _, operation in operations(spec)]
    assert len(ids) > 30
    assert [name for name, times in Counter(ids).items() if times > 1] == []
    for path, method, operation in operations(spec):
        assert operation.get("tags"), f"{method} {path} has no tag"
        assert OPERATION_ID.match(operation["operationId"]), operation["operationId"]
        assert operation["operationId"].startswith(f"{operation['tags'][0]}-"), operation["operationId"]


def test_every_route_has_a_readable_summary_and_named_ids(spec):
    summaries = [operation["summary"] for _, _, operation in operations(spec)]
    assert [name for name, times in Counter(summaries).items() if times > 1] == []
    for path, method, operation in operations(spec):
        assert not UGLY.search(operation["summary"]), f"{method} {path}: {operation['summary']}"
        assert not UGLY.search(operation["operationId"]), operation["operationId"]
        for name in path_params(operation):  # `restaurant_id`, `order_id`: not `id`, `row_id`, `rid`
            assert name.endswith("_id") and name not in ("row_id",), f"{method} {path}: name it `<thing>_id`"
        assert "row_id" not in path
    crud = spec["paths"]["/api/v1/restaurants/{restaurant_id}/categories/{category_id}"]
    assert crud["get"]["summary"] == "Get Category" and crud["get"]["operationId"] == "categories-get_category"
    assert spec["paths"]["/api/v1/restaurants/{restaurant_id}/menus/{menu_id}"]["delete"]["summary"] == "Delete Menu"


def test_error_responses_are_documented_with_the_error_model(spec):
    error = {"$ref": "#/components/schemas/ErrorOut"}
    assert spec["components"]["schemas"]["ErrorOut"]["required"] == ["detail"]
    for path, method, operation in operations(spec):
        responses = operation["responses"]
        wanted = set()
        if operation.get("security"):
            wanted.add("401")
            if path_params(operation):
                wanted.add("403")
                if method in WRITES:
                    wanted.add("409")
        if path_params(operation):
            wanted.add("404")
        assert wanted <= set(responses), f"{method} {path}: {sorted(responses)}"
        for code in wanted:
            schema = responses[code]["content"]["application/json"]["schema"]
            named = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
            # the error model, or one that says more beside its `detail` (a device's refusal: reason and when)
            assert schema == error or "detail" in named.get("required", []), f"{method} {path} {code}"
    paths = spec["paths"]
    assert "401" in paths["/api/v1/auth/login"]["post"]["responses"]  # declared by the route itself
    assert "403" in paths["/api/v1/restaurants"]["post"]["responses"]
    assert {"401", "403", "404", "409"} <= set(paths["/api/v1/restaurants/{restaurant_id}/orders"]["post"]["responses"])
    assert "409" not in paths["/api/v1/restaurants/{restaurant_id}/orders"]["get"]["responses"]
    assert "401" not in paths["/api/v1/config"]["get"]["responses"]  # public


def test_every_documented_401_is_what_a_call_without_a_token_gets(spec, client):
    """The documentation is not only words: each route that says 401 refuses a call with no token."""
    checked = 0
    for path, method, operation in operations(spec):
        if "401" not in operation["responses"] or path == "/api/v1/auth/login":
            continue
        url = re.sub(r"\{[a-z_]+\}", "1", path).removeprefix("/api/v1")
        answer = client.request(method.upper(), url)
        assert answer.status_code == 401, f"{method} {path}: {answer.status_code} {answer.text}"
        assert answer.json()["detail"]
        checked += 1
    assert checked > 30


def test_every_documented_403_under_a_restaurant_is_what_another_restaurant_gets(app: App, spec):
    """Each restaurant route that says 403 refuses the admin (or a device) of another restaurant,
    and the refusal changes nothing."""
    rid, other = app.add_restaurant("A", "a@example.com"), app.add_restaurant("B", "b@example.com")
    stranger = app.http(app.api_token("b", "admin", other))
    device = app.http(app.mqtt_token("printer-b", "printer", other))
    events_before = app.http(app.api_token("a", "admin", rid)).get(f"/restaurants/{rid}/events").json()
    checked = 0
    for path, method, operation in operations(spec):
        if "403" not in operation["responses"] or "{restaurant_id}" not in path:
            continue
        url = path.replace("{restaurant_id}", str(rid))
        url = re.sub(r"\{[a-z_]+\}", "1", url).removeprefix("/api/v1")
        caller = device if operation["tags"] == ["device-catchup"] else stranger
        answer = caller.request(method.upper(), url)
        assert answer.status_code == 403, f"{method} {path}: {answer.status_code} {answer.text}"
        checked += 1
    assert checked > 30
    assert app.http(app.api_token("a", "admin", rid)).get(f"/restaurants/{rid}/events").json() == events_before


def test_every_list_is_a_page_with_skip_and_limit(spec):
    pages = 0
    for path, method, operation in operations(spec):
        if method != "get" or operation["operationId"] in FEEDS:
            continue
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema.get("type") != "array", f"GET {path} answers a bare list; answer a Page"
        if "$ref" in schema and schema["$ref"].split("/")[-1].startswith("Page"):
            body = spec["components"]["schemas"][schema["$ref"].split("/")[-1]]
            assert set(body["required"]) == {"data", "count"}
            query = {p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "query"}
            assert query["skip"]["minimum"] == 0 and query["skip"]["default"] == 0, path
            assert (query["limit"]["minimum"], query["limit"]["maximum"], query["limit"]["default"]) == (1, 500, 100)
            pages += 1
    assert pages == 13  # 11, an item's stock movements and an order's refunds


# --- pages through the app --------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, app: App, tmp_path) -> Iterator[App]:
    """The app on SQLite, and on PostgreSQL (OFFSET, LIMIT and the count differ between them)."""
    if request.param == "sqlite":
        yield app
        return
    with fresh_engine("paging") as (url, engine):
        yield App(Settings(data_dir=tmp_path / "pg", database_url=url), engine)


@pytest.fixture
def two(site: App):
    """Restaurant A with seven menus, B with two; an admin of each."""
    app = site
    rid, other = app.add_restaurant("A", "a@example.com"), app.add_restaurant("B", "b@example.com")
    admin, other_admin = app.http(app.api_token("a", "admin", rid)), app.http(app.api_token("b", "admin", other))
    menus = [admin.post(f"/restaurants/{rid}/menus", json={"name": f"Menu {n}"}).json()["id"] for n in range(7)]
    for n in range(2):
        assert other_admin.post(f"/restaurants/{other}/menus", json={"name": f"B {n}"}).status_code == 201
    return {"rid": rid, "other": other, "admin": admin, "menus": menus}


def list_paths(spec: dict[str, Any]) -> list[str]:
    return [
        path.removeprefix("/api/v1")
        for path, method, operation in operations(spec)
        if method == "get" and any(p["name"] == "skip" for p in operation.get("parameters", []))
    ]


def test_a_page_is_a_window_of_the_list_with_the_whole_lists_count(two):
    rid, admin, menus = two["rid"], two["admin"], two["menus"]
    everything = admin.get(f"/restaurants/{rid}/menus").json()
    assert everything == {"data": everything["data"], "count": 7}
    assert [menu["id"] for menu in everything["data"]] == menus
    window = admin.get(f"/restaurants/{rid}/menus", params={"skip": 2, "limit": 3}).json()
    assert [menu["id"] for menu in window["data"]] == menus[2:5] and window["count"] == 7
    last = admin.get(f"/restaurants/{rid}/menus", params={"skip": 6, "limit": 500}).json()
    assert [menu["id"] for menu in last["data"]] == menus[6:] and last["count"] == 7
    past = admin.get(f"/restaurants/{rid}/menus", params={"skip": 7}).json()
    assert past == {"data": [], "count": 7}
    assert admin.get(f"/restaurants/{rid}/menus", params={"skip": 2**63 - 1}).json() == {"data": [], "count": 7}


def test_counts_follow_the_filters(site: App, two):
    app = site
    rid, admin = two["rid"], two["admin"]
    item = admin.post(
        f"/restaurants/{rid}/menu-items",
        json={
            "menu_id": two["menus"][0],
            "name": "Tea",
            "price_cents": 300,
            "enable_stock_tracking": True,
            "stock_quantity": 6,
        },
    ).json()
    admin.post(f"/restaurants/{rid}/menu-items", json={"menu_id": two["menus"][0], "name": "Soup", "price_cents": 500})
    assert admin.put(f"/restaurants/{rid}/inventory/{item['id']}/threshold", json={"low_stock_threshold": 5}).is_success
    orders = [
        admin.post(f"/restaurants/{rid}/orders", json={"items": [{"menu_item_id": item["id"], "quantity": 1}]})
        for _ in range(3)
    ]
    assert [o.status_code for o in orders] == [201, 201, 201]
    moved = admin.post(f"/restaurants/{rid}/orders/{orders[0].json()['id']}/status", json={"status": "preparing"})
    assert moved.is_success
    newest = admin.get(f"/restaurants/{rid}/orders", params={"limit": 1}).json()
    assert [o["id"] for o in newest["data"]] == [orders[2].json()["id"]] and newest["count"] == 3
    preparing = admin.get(f"/restaurants/{rid}/orders", params={"status": "preparing"}).json()
    assert [o["id"] for o in preparing["data"]] == [orders[0].json()["id"]] and preparing["count"] == 1
    assert admin.get(f"/restaurants/{rid}/menu-items").json()["count"] == 2
    assert admin.get(f"/restaurants/{rid}/inventory").json()["count"] == 1  # tracked items only
    tickets = admin.get(f"/restaurants/{rid}/orders/{orders[0].json()['id']}/tickets", params={"limit": 1}).json()
    assert tickets["count"] >= len(tickets["data"]) == 1
    notes = admin.get(f"/restaurants/{rid}/notifications").json()
    assert notes["count"] == len(notes["data"]) >= 1
    note = notes["data"][0]["id"]
    assert admin.post(f"/restaurants/{rid}/notifications/{note}/read").is_success
    unread = admin.get(f"/restaurants/{rid}/notifications", params={"unread": True}).json()
    assert unread["count"] == notes["count"] - 1 and note not in [n["id"] for n in unread["data"]]
    own = {"id": rid, "name": "A", "currency": "EUR", "timezone": "UTC", "day_starts_at": 4}
    assert admin.get("/restaurants").json() == {"data": [own], "count": 1}
    operator = app.http(app.api_token("root", "super_admin", None))
    assert operator.get("/restaurants", params={"limit": 1}).json()["count"] == 2


def test_bad_page_parameters_are_422_on_every_list(spec, two):
    rid, admin = two["rid"], two["admin"]
    before = admin.get(f"/restaurants/{rid}/menus").json()
    paths = list_paths(spec)
    assert len(paths) == 13  # every paged list, as counted above
    for path in paths:
        url = path.replace("{restaurant_id}", str(rid)).replace("{order_id}", "1").replace("{item_id}", "1")
        for bad in BAD_PAGES:
            answer = admin.get(url, params=bad)
            assert answer.status_code == 422, f"{url} {bad}: {answer.status_code}"
            (error,) = answer.json()["detail"]
            assert error["loc"] == ["query", next(iter(bad))], error
    assert admin.get(f"/restaurants/{rid}/menus").json() == before


def test_the_docs_pages_load_their_assets_from_the_app(client):
    """/docs and /redoc name no other host: their scripts, styles and favicon are the app's own."""
    root = client.base_url.copy_with(path="/")
    for page, assets in (("/docs", 3), ("/redoc", 2)):
        answer = client.get(str(root.join(page)))
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?['"]([^'"]+)['"]""", answer.text)
        found = [a or b for a, b in urls]
        assert len(found) >= assets, found
        assert [url for url in found if re.match(r"^(https?:)?//", url)] == [], f"{page}: {found}"
        assert "/api/v1/openapi.json" in answer.text
        for url in found:
            if url.startswith("/static-offline-docs/"):
                asset = client.get(str(root.join(url)))
                assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert client.get(str(root.join("/static-offline-docs/no-such.js"))).status_code == 404
