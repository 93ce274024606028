"""Authentication and roles through the real app in process (``auth`` on): who gets what."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from controlplane.api import Context
from controlplane.auth.authenticator import Authenticator
from controlplane.auth.middleware import AuthMiddleware
from controlplane.store import Store
from tests.controlplane.auth.conftest import ROLLOUT, Client, error, seed_fleet, settings
from tests.controlplane.auth_helpers import make_token

PASSWORD = "correct horse battery staple"


def basic(name: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


async def test_everything_is_refused_until_the_first_admin_exists(
    client: Client, store: Store
) -> None:
    c = client()
    for path in ["/api/v1/devices", "/api/v1/audit", "/api/v1/nothing/here"]:
        error(await c.get(path), 503, "edgefleet users create", "--admin")
    error(await c.post("/api/v1/rollouts", json=ROLLOUT), 503, "no administrator")
    # a user who is not an admin does not count
    viewer = make_token(store, "vic", "viewer")
    error(await client(viewer).get("/api/v1/devices"), 503, "no administrator")
    page = await c.get("/fleet")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/fleet"
    login = await c.get("/login")
    assert login.status_code == 200 and "edgefleet users create" in login.text
    # what devices, probes and scrapers call stays open
    assert (await c.get("/healthz")).status_code == 200
    assert (await c.get("/metrics")).status_code == 200
    assert (await c.get("/api/v1/keys/release")).status_code == 200
    error(await c.get("/api/v1/artifacts/" + "0" * 64), 404)

    make_token(store, "root", "admin")
    error(await c.get("/api/v1/devices"), 401, "authentication required", "EDGEFLEET_TOKEN")
    assert (await client(viewer).get("/api/v1/devices")).status_code == 200


async def test_unauthenticated_and_bad_credentials_get_401_json(
    client: Client, tokens: dict[str, str]
) -> None:
    c = client()
    for method, path in [
        ("GET", "/api/v1/devices"), ("POST", "/api/v1/rollouts"), ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/unknown"), ("DELETE", "/api/v1/data"), ("GET", "/api/v1/me"),
    ]:  # fmt: skip
        response = await c.request(method, path)
        error(response, 401, "authentication required")
        assert response.headers["www-authenticate"] == 'Bearer realm="edgefleet"'
    token = tokens["admin"]
    for header, words in [
        ("Bearer nonsense", ["invalid token"]),
        ("Bearer " + token[:-2] + "xx", ["invalid token"]),
        ("Token " + token, ["unsupported", "Bearer"]),
        ("Basic " + base64.b64encode(b"admin:x").decode(), ["only to create a token"]),
    ]:
        response = await c.get("/api/v1/devices", headers={"Authorization": header})
        error(response, 401, *words)
    assert (await client(token).get("/api/v1/devices")).status_code == 200


async def test_a_viewer_cannot_start_a_rollout_but_can_list_them_and_an_operator_can(
    client: Client, app: Starlette, store: Store, tokens: dict[str, str]
) -> None:
    await seed_fleet(app, store)
    viewer, operator = client(tokens["viewer"]), client(tokens["operator"])
    listing = await viewer.get("/api/v1/rollouts")
    assert listing.status_code == 200 and listing.json()["rollouts"] == []
    error(
        await viewer.post("/api/v1/rollouts", json=ROLLOUT),
        403, "vic (viewer via token) may not POST /api/v1/rollouts", "operator role",
    )  # fmt: skip
    assert (await viewer.get("/api/v1/rollouts")).json()["rollouts"] == [], "nothing started"
    started = await operator.post("/api/v1/rollouts", json=ROLLOUT)
    assert started.status_code == 201, started.text
    rid = started.json()["id"]
    error(await viewer.post(f"/api/v1/rollouts/{rid}/pause"), 403, "operator role")
    paused = await operator.post(f"/api/v1/rollouts/{rid}/pause")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    error(await viewer.patch("/api/v1/devices/cam-0/tags", json={"set": {"a": "b"}}), 403)
    # admin-only routes stay closed to an operator
    error(await operator.get("/api/v1/audit"), 403, "admin role")
    error(await operator.post("/api/v1/users", json={"name": "x"}), 403, "admin role")


async def test_a_revoked_token_stops_working_at_once(
    client: Client, tokens: dict[str, str]
) -> None:
    operator = client(tokens["operator"])
    made = await operator.post("/api/v1/tokens", json={"name": "ci", "role": "viewer"})
    assert made.status_code == 201, made.text
    token, token_id = made.json()["token"], made.json()["id"]
    ci = client(token)
    me = (await ci.get("/api/v1/me")).json()
    assert me == {
        "user": "olga",
        "role": "viewer",
        "via": "token",
        "token_id": token_id,
        "auth": True,
    }
    error(await client(tokens["viewer"]).delete(f"/api/v1/tokens/{token_id}"), 403, "owner")
    revoked = await operator.delete(f"/api/v1/tokens/{token_id}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    error(await ci.get("/api/v1/me"), 401, f"token {token_id} was revoked")
    assert (await operator.get("/api/v1/me")).status_code == 200, "only that token"


async def test_a_disabled_users_sessions_and_tokens_stop_working(
    client: Client, tokens: dict[str, str]
) -> None:
    admin = client(tokens["admin"])
    made = await admin.post(
        "/api/v1/users", json={"name": "dora", "role": "operator", "password": PASSWORD}
    )
    assert made.status_code == 201, made.text
    assert made.json()["has_password"] and "password" not in made.json()
    # dora makes her first token with her password, and logs in to the console
    first = await client().post("/api/v1/tokens", json={}, headers=basic("dora", PASSWORD))
    assert first.status_code == 201, first.text
    assert first.json()["role"] == "operator" and first.json()["user"] == "dora"
    token = client(first.json()["token"])
    browser = client()
    form = await browser.get("/login")
    login = await browser.post(
        "/login",
        data={"user": "dora", "password": PASSWORD, "csrf_token": _form_token(form.text)},
    )
    assert login.status_code == 303, login.text
    assert (await browser.get("/api/v1/me")).json()["via"] == "session"
    assert (await token.get("/api/v1/me")).json()["user"] == "dora"

    disabled = await admin.patch("/api/v1/users/dora", json={"disabled": True})
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    error(await token.get("/api/v1/me"), 401, "'dora' is disabled")
    error(await browser.get("/api/v1/me"), 401, "not logged in")  # her sessions were deleted
    error(await client().post("/api/v1/tokens", json={}, headers=basic("dora", PASSWORD)), 401)
    enabled = await admin.patch("/api/v1/users/dora", json={"disabled": False})
    assert enabled.json()["disabled"] is False
    assert (await token.get("/api/v1/me")).status_code == 200, "tokens were not revoked"

    # the last enabled admin cannot be disabled or demoted (nobody could manage users)
    error(await admin.patch("/api/v1/users/admin", json={"disabled": True}), 409, "last")
    error(await admin.patch("/api/v1/users/admin", json={"role": "viewer"}), 409, "last")


async def test_token_scopes_and_listings(client: Client, tokens: dict[str, str]) -> None:
    operator, viewer, admin = (client(tokens[r]) for r in ("operator", "viewer", "admin"))
    error(await operator.post("/api/v1/tokens", json={"role": "admin"}), 403, "above 'operator'")
    error(await operator.post("/api/v1/tokens", json={"user": "vic"}), 403, "only an admin")
    error(await operator.post("/api/v1/tokens", json={"rolee": "viewer"}), 400, "rolee")
    error(await operator.post("/api/v1/tokens", json={"expires_in_s": -1}), 400, "expires_in_s")
    for_vic = await admin.post("/api/v1/tokens", json={"user": "vic", "role": "operator"})
    error(for_vic, 403, "above 'viewer'")
    for_vic = await admin.post("/api/v1/tokens", json={"user": "vic"})
    assert for_vic.status_code == 201 and for_vic.json()["role"] == "viewer"

    mine = (await viewer.get("/api/v1/tokens")).json()
    assert {t["user"] for t in mine["tokens"]} == {"vic"} and mine["count"] == 2
    assert all("token" not in t and "secret_digest" not in t for t in mine["tokens"])
    error(await viewer.get("/api/v1/tokens", params={"all": "true"}), 403, "only an admin")
    error(await viewer.get("/api/v1/tokens", params={"user": "olga"}), 403, "only an admin")
    everyone = (await admin.get("/api/v1/tokens", params={"all": "true"})).json()
    assert {t["user"] for t in everyone["tokens"]} == {"admin", "olga", "vic"}

    # a token that expires
    short = await operator.post("/api/v1/tokens", json={"expires_in_s": 60})
    app_ctx: Context = admin._transport.app.state.ctx  # type: ignore[attr-defined]
    assert (await client(short.json()["token"]).get("/api/v1/me")).status_code == 200
    now = app_ctx.clock()
    app_ctx.clock = lambda: now + 61
    error(await client(short.json()["token"]).get("/api/v1/me"), 401, "has expired")


async def test_passwords_are_changed_by_their_owner_or_an_admin(
    client: Client, tokens: dict[str, str]
) -> None:
    admin = client(tokens["admin"])
    assert (
        await admin.post("/api/v1/users", json={"name": "pia", "password": PASSWORD})
    ).status_code == 201
    error(await admin.post("/api/v1/users", json={"name": "pia"}), 409, "exists already")
    error(await admin.post("/api/v1/users", json={"name": "bad/name"}), 400, "name")
    error(await admin.post("/api/v1/users", json={"name": "q", "password": "short"}), 400, "12")
    error(await admin.post("/api/v1/users", json={"name": "q", "role": "root"}), 400, "role")
    first = await client().post("/api/v1/tokens", headers=basic("pia", PASSWORD))
    pia = client(first.json()["token"])
    new = "another long passphrase"
    by_vic = await client(tokens["viewer"]).put(
        "/api/v1/users/pia/password", json={"password": new}
    )
    error(by_vic, 403, "only 'pia'")
    assert (await pia.put("/api/v1/users/pia/password", json={"password": new})).status_code == 200
    error(await client().post("/api/v1/tokens", headers=basic("pia", PASSWORD)), 401, "wrong")
    error(await client().post("/api/v1/tokens", headers=basic("nobody", PASSWORD)), 401, "wrong")
    assert (await client().post("/api/v1/tokens", headers=basic("pia", new))).status_code == 201
    listing = (await admin.get("/api/v1/users")).json()
    assert [u["name"] for u in listing["users"]] == ["admin", "olga", "pia", "vic"]
    assert all("password_hash" not in u for u in listing["users"])


async def _echo(request: Request) -> Response:
    identity = request.state.identity
    return JSONResponse(
        {"user_header": request.headers.getlist("x-edgefleet-user"), "who": identity.user,
         "request_id": request.state.request_id},
    )  # fmt: skip


async def test_identity_request_id_and_the_user_header(
    store: Store, tmp_path: Path, tokens: dict[str, str]
) -> None:
    import httpx

    app = Starlette(routes=[Route("/api/v1/echo", _echo, methods=["GET"])])
    auth = Authenticator(settings(tmp_path), store, clock=lambda: 1e12)
    app.state.auth = auth
    app.add_middleware(AuthMiddleware, auth=auth)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as c:
        headers = {"Authorization": f"Bearer {tokens['operator']}", "X-Edgefleet-User": "admin"}
        # a route missing from the policy table needs admin: deny by default
        error(await c.get("/api/v1/echo", headers=headers), 403, "admin role")
        headers["Authorization"] = f"Bearer {tokens['admin']}"
        response = await c.get("/api/v1/echo", headers={**headers, "X-Request-Id": "req-42"})
        assert response.json() == {"user_header": ["admin"], "who": "admin", "request_id": "req-42"}
        assert response.headers["x-request-id"] == "req-42"
        headers["X-Edgefleet-User"] = "someone-else"
        response = await c.get("/api/v1/echo", headers={**headers, "X-Request-Id": "bad id!"})
        body = response.json()
        assert body["user_header"] == ["admin"], "a client cannot claim to be another user"
        assert body["request_id"] != "bad id!" and len(body["request_id"]) == 32


def _form_token(page: str) -> str:
    marker = 'name="csrf_token" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


@pytest.mark.parametrize("path", ["/api/v1/users", "/api/v1/audit"])
async def test_admin_routes_refuse_viewers_and_operators(
    client: Client, tokens: dict[str, str], path: str
) -> None:
    for role in ("viewer", "operator"):
        error(await client(tokens[role]).get(path), 403, "admin role")
    assert (await client(tokens["admin"]).get(path)).status_code == 200


async def test_websockets_are_refused_while_no_route_checks_them(app: Starlette) -> None:
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hello")

    app.router.routes.append(WebSocketRoute("/ws", echo))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket", "path": "/ws", "root_path": "", "headers": [], "query_string": b"",
        "scheme": "ws", "server": ("cp", 80), "client": ("t", 1),
    }  # fmt: skip
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_auth_off_is_said_loudly_and_lets_everyone_in(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx

    from controlplane.app import create_app

    with caplog.at_level("WARNING", logger="controlplane.auth.middleware"):
        off = settings(tmp_path).model_copy(update={"auth": False})
        app = create_app(off, store=store, mqtt=False)
    assert "auth is OFF" in caplog.text
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as c:
        me = (await c.get("/api/v1/me")).json()
        assert me == {"user": None, "role": "admin", "via": "none", "token_id": None, "auth": False}
        assert (await c.get("/api/v1/audit")).status_code == 200
