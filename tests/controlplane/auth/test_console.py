"""Console sessions: login, the cookie's flags, CSRF on every form post, expiry, logout."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from controlplane.api import Context
from controlplane.auth import csrf
from controlplane.store import Store
from tests.controlplane.auth.conftest import Client, error, seed_fleet
from tests.controlplane.auth.test_api import PASSWORD, _form_token
from tests.controlplane.auth_helpers import make_token


async def _user(client: Client, admin_token: str, name: str, role: str) -> None:
    made = await client(admin_token).post(
        "/api/v1/users", json={"name": name, "role": role, "password": PASSWORD}
    )
    assert made.status_code == 201, made.text


async def login(c: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    form = await c.get("/login", params={"next": "/rollouts"})
    token = _form_token(form.text)
    return await c.post(
        "/login", data={"user": name, "password": password, "csrf_token": token, "next": "/x"}
    )


async def test_login_sets_a_locked_down_session_cookie(
    client: Client, store: Store, tokens: dict[str, str]
) -> None:
    await _user(client, tokens["admin"], "cora", "operator")
    browser = client()
    page = await browser.get("/fleet")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/fleet"
    wrong = await login(browser, "cora", "not her password!")
    assert wrong.status_code == 401 and "wrong user name or password" in wrong.text
    assert "edgefleet_session" not in browser.cookies
    ok = await login(browser, "cora")
    assert ok.status_code == 303 and ok.headers["location"] == "/x"
    cookie = ok.headers["set-cookie"]
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert cookie.startswith("edgefleet_session=")
    assert {"httponly", "samesite=lax", "path=/"} <= flags and "secure" not in flags
    assert "max-age=28800" in flags
    me = (await browser.get("/api/v1/me")).json()
    assert me["user"] == "cora" and me["via"] == "session" and me["role"] == "operator"
    assert (await browser.get("/fleet")).status_code == 200

    # over HTTPS the cookie is Secure as well
    tls = client(base_url="https://cp")
    assert "secure" in (await login(tls, "cora")).headers["set-cookie"].lower()
    # a login form posted from elsewhere (no login cookie) is refused
    stranger = client()
    forged = await stranger.post(
        "/login", data={"user": "cora", "password": PASSWORD, "csrf_token": "guess"}
    )
    assert forged.status_code == 403 and "edgefleet_session" not in stranger.cookies
    # never an open redirect
    evil = client()
    form = await evil.get("/login")
    done = await evil.post(
        "/login",
        data={"user": "cora", "password": PASSWORD, "csrf_token": _form_token(form.text),
              "next": "//evil.example/x"},
    )  # fmt: skip
    assert done.headers["location"] == "/"


async def test_a_second_fetch_of_the_login_page_keeps_the_form_shown_valid(
    client: Client, tokens: dict[str, str]
) -> None:
    """A browser also fetches /favicon.ico, which is redirected to /login: that second GET must not
    replace the login cookie behind the form on screen (seen in chromium)."""
    await _user(client, tokens["admin"], "fay", "operator")
    browser = client()
    shown = _form_token((await browser.get("/login", params={"next": "/fleet"})).text)
    again = await browser.get("/favicon.ico", follow_redirects=True)
    assert again.url.path == "/login" and _form_token(again.text) == shown
    done = await browser.post(
        "/login", data={"user": "fay", "password": PASSWORD, "csrf_token": shown, "next": "/x"}
    )
    assert done.status_code == 303 and "edgefleet_session" in browser.cookies


async def test_a_form_post_without_the_csrf_token_is_refused(
    client: Client, app: Starlette, store: Store, tokens: dict[str, str]
) -> None:
    await seed_fleet(app, store)
    await _user(client, tokens["admin"], "cora", "operator")
    browser = client()
    await login(browser, "cora")
    ctx: Context = app.state.ctx
    session = await _session_csrf(ctx, store, "cora")

    # a JSON call with the session cookie: the token goes in X-CSRF-Token
    tags = {"set": {"room": "1"}}
    error(await browser.patch("/api/v1/devices/cam-0/tags", json=tags), 403, "CSRF")
    wrong = await browser.patch(
        "/api/v1/devices/cam-0/tags", json=tags, headers={"X-CSRF-Token": "x" * 43}
    )
    error(wrong, 403, "CSRF")
    device = (await browser.get("/api/v1/devices/cam-0")).json()
    assert "room" not in device["tags"], "refused before the handler ran"
    ok = await browser.patch(
        "/api/v1/devices/cam-0/tags", json=tags, headers={"X-CSRF-Token": session}
    )
    assert ok.status_code == 200, ok.text

    # a console form: the token is the csrf_token field
    rollout = await client(tokens["operator"]).post(
        "/api/v1/rollouts", json={"model": "digits", "version": "2", "select": {"site": "lab"}}
    )  # a bearer token needs no CSRF token
    rid = rollout.json()["id"]
    refused = await browser.post(f"/rollouts/{rid}/pause", data={"confirmed": "yes"})
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert refused.headers["content-type"].startswith("text/html")
    state = (await browser.get(f"/api/v1/rollouts/{rid}")).json()["state"]
    assert state == "running"
    form = {"confirmed": "yes", "csrf_token": session}
    passed = await browser.post(f"/rollouts/{rid}/pause", data=form)
    assert passed.status_code == 303, passed.text  # the handler read the form replayed to it
    assert (await browser.get(f"/api/v1/rollouts/{rid}")).json()["state"] == "paused"

    # logout is a form post too: without the token the session survives
    assert (await browser.post("/logout")).status_code == 403
    assert (await browser.get("/api/v1/me")).status_code == 200


async def test_logout_ends_the_session_on_the_server(
    client: Client, app: Starlette, store: Store, tokens: dict[str, str]
) -> None:
    await _user(client, tokens["admin"], "cora", "viewer")
    browser = client()
    await login(browser, "cora")
    cookie = browser.cookies["edgefleet_session"]
    session = await _session_csrf(app.state.ctx, store, "cora")
    out = await browser.post("/logout", data={"csrf_token": session})
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert "edgefleet_session" not in browser.cookies
    copy = client()
    copy.cookies.set("edgefleet_session", cookie)  # a copy of the old cookie is worthless
    error(await copy.get("/api/v1/me"), 401, "not logged in")
    assert (await copy.get("/fleet")).status_code == 303


async def test_a_session_expires(
    client: Client, app: Starlette, store: Store, tokens: dict[str, str]
) -> None:
    await _user(client, tokens["admin"], "cora", "viewer")
    browser = client()
    await login(browser, "cora")
    ctx: Context = app.state.ctx
    assert (await browser.get("/api/v1/me")).status_code == 200
    start = ctx.clock()
    ctx.clock = lambda: start + ctx.settings.session_lifetime_s - 60
    assert (await browser.get("/api/v1/me")).status_code == 200
    ctx.clock = lambda: start + ctx.settings.session_lifetime_s + 1
    error(await browser.get("/api/v1/me"), 401, "expired")
    page = await browser.get("/rollouts")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/rollouts"


async def test_a_viewer_is_refused_the_operators_pages(
    client: Client, tokens: dict[str, str]
) -> None:
    await _user(client, tokens["admin"], "cora", "viewer")
    browser = client()
    await login(browser, "cora")
    assert (await browser.get("/rollouts")).status_code == 200
    page = await browser.get("/rollouts/new")
    assert page.status_code == 403 and page.headers["content-type"].startswith("text/html")
    assert "operator role" in page.text


async def _session_csrf(ctx: Context, store: Store, user: str) -> str:
    """The CSRF token of the user's latest session (what the console renders into its forms)."""

    def read(conn: object) -> str:
        row = conn.execute(  # type: ignore[attr-defined]
            "SELECT s.csrf_token FROM sessions s JOIN users u ON u.id = s.user_id"
            " WHERE u.name = ? ORDER BY s.created_at DESC LIMIT 1",
            [user],
        ).fetchone()
        return str(row[0])

    return await store.read(read)


async def _form_page(request: Request) -> Response:
    return HTMLResponse(f"<form method=post>{csrf.csrf_field()}</form>{csrf.csrf_token(request)}")


async def test_csrf_field_renders_the_sessions_token(
    client: Client, app: Starlette, store: Store, tokens: dict[str, str]
) -> None:
    app.router.routes.append(Route("/fleet/form", _form_page, methods=["GET"]))
    await _user(client, tokens["admin"], "cora", "viewer")
    browser = client()
    await login(browser, "cora")
    session = await _session_csrf(app.state.ctx, store, "cora")
    admin = make_token(store, "admin", "admin")
    page = await browser.get("/fleet/form")  # not in the policy table: admin only
    assert page.status_code == 403
    page = await client(admin).get("/fleet/form")
    assert page.text == "<form method=post></form>", "a bearer token needs no CSRF field"
    await client(tokens["admin"]).patch("/api/v1/users/cora", json={"role": "admin"})
    page = await browser.get("/fleet/form")
    field = f'<input type="hidden" name="csrf_token" value="{session}">'
    assert page.text == f"<form method=post>{field}</form>{session}"
