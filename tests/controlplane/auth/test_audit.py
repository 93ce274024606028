"""The audit log: a record per mutating request (who, what, when, where, outcome), none for
reads, append-only in the database itself, exported as JSON lines."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette

from controlplane.app import create_app
from controlplane.audit.log import REDACTED, client_address, parse_networks, target_of
from controlplane.auth import local
from controlplane.cli import main
from controlplane.errors import StoreError
from controlplane.store import Store
from tests.controlplane.auth.conftest import ROLLOUT, Client, error, seed_fleet, settings
from tests.controlplane.registry.conftest import DIGITS, golden, manifest

FP32 = (DIGITS / "edge_fp32.tflite").read_bytes()


async def records(client: Client, admin: str, **params: Any) -> list[dict[str, Any]]:
    page = await client(admin).get("/api/v1/audit", params={"order": "asc", **params})
    assert page.status_code == 200, page.text
    found: list[dict[str, Any]] = page.json()["records"]
    return found


async def test_every_mutating_action_is_recorded_with_who_what_when_and_where(
    client: Client, app: Starlette, store: Store, tokens: dict[str, str]
) -> None:
    await seed_fleet(app, store)
    operator, admin, viewer = (client(tokens[r]) for r in ("operator", "admin", "viewer"))
    before = time.time()
    # push: an artifact and a release
    sha = (await operator.put("/api/v1/artifacts", content=FP32)).json()["sha256"]
    body = {"version": "1.0.0", "artifacts": {"cpu": sha}, "manifest": manifest(),
            "golden": golden()}  # fmt: skip
    pushed = await operator.post("/api/v1/models/digits-edge/releases", json=body)
    assert pushed.status_code == 201, pushed.text
    # a rollout started and paused, a tag, a user, a token revoked, a refusal
    rid = (await operator.post("/api/v1/rollouts", json=ROLLOUT)).json()["id"]
    paused = await operator.post(f"/api/v1/rollouts/{rid}/pause", headers={"X-Request-Id": "r-1"})
    assert paused.status_code == 200
    assert (await operator.patch("/api/v1/devices/cam-1/tags", json={"set": {"k": "v"}})).is_success
    made = await admin.post("/api/v1/users", json={"name": "new", "password": "x" * 16})
    assert made.status_code == 201
    token = (await viewer.post("/api/v1/tokens", json={"name": "script"})).json()
    assert (await viewer.delete(f"/api/v1/tokens/{token['id']}")).status_code == 200
    error(await viewer.post(f"/api/v1/rollouts/{rid}/resume"), 403)
    # reads, and what devices upload, are not recorded
    await viewer.get("/api/v1/rollouts")
    await client().put(
        "/api/v1/samples/cam-1/r1", content=b"x", params={"model": "digits", "model_version": "1"}
    )

    found = await records(client, tokens["admin"])
    actions = [(r["actor"], r["action"], r["outcome"]) for r in found]
    assert actions == [
        ("olga", "PUT /api/v1/artifacts", 201),
        ("olga", "POST /api/v1/models/{name}/releases", 201),
        ("olga", "POST /api/v1/rollouts", 201),
        ("olga", "POST /api/v1/rollouts/{id}/{action}", 200),
        ("olga", "PATCH /api/v1/devices/{id}/tags", 200),
        ("admin", "POST /api/v1/users", 201),
        ("vic", "POST /api/v1/tokens", 201),
        ("vic", "DELETE /api/v1/tokens/{id}", 200),
        ("vic", "POST /api/v1/rollouts/{id}/{action}", 403),
    ]
    pause = found[3]
    assert pause["target"] == {"id": rid, "action": "pause"}
    assert pause["role"] == "operator" and pause["via"] == "token"
    assert pause["token_id"] == tokens["operator"][4:16]
    assert pause["request_id"] == "r-1" and pause["address"] == "127.0.0.1"
    assert pause["forwarded_for"] is None and before <= pause["at"] <= time.time()
    assert found[1]["target"] == {"name": "digits-edge"}
    assert found[5]["detail"] == {"role": "viewer", "user": "new"}
    assert found[6]["detail"]["token_id"] == token["id"]
    assert found[7]["target"] == {"id": token["id"]}
    assert found[8]["target"] == {"id": rid, "action": "resume"} and found[8]["role"] == "viewer"
    text = json.dumps(found)
    for secret in [tokens["operator"], token["token"], "x" * 16, "password"]:
        assert secret not in text, "no secret in the log"

    # filters and paging
    mine = await records(client, tokens["admin"], actor="vic")
    assert [r["action"] for r in mine] == [a for who, a, _ in actions if who == "vic"]
    refused = await records(client, tokens["admin"], outcome="403")
    assert len(refused) == 1
    route = await records(client, tokens["admin"], route="/api/v1/rollouts/{id}/{action}")
    assert len(route) == 2
    page = (await admin.get("/api/v1/audit", params={"limit": 4})).json()
    assert page["count"] == 4 and page["records"][0]["outcome"] == 403, "newest first"
    rest = await admin.get("/api/v1/audit", params={"limit": 50, "cursor": page["next_cursor"]})
    assert rest.json()["count"] == 5 and rest.json()["next_cursor"] is None
    error(await admin.get("/api/v1/audit", params={"outcome": "ok"}), 400, "outcome")
    error(await admin.get("/api/v1/audit", params={"who": "x"}), 400, "who")


async def test_a_login_and_a_failed_one_are_recorded(
    client: Client, tokens: dict[str, str]
) -> None:
    made = await client(tokens["admin"]).post(
        "/api/v1/users", json={"name": "cora", "password": "x" * 16}
    )
    assert made.status_code == 201
    from tests.controlplane.auth.test_console import login

    browser = client()
    assert (await login(browser, "cora", "y" * 16)).status_code == 401
    assert (await login(browser, "cora", "x" * 16)).status_code == 303
    found = await records(client, tokens["admin"], route="/login")
    assert [(r["actor"], r["outcome"], r["detail"]) for r in found] == [
        (None, 401, {"user": "cora"}),
        ("cora", 303, {"user": "cora"}),
    ]
    assert found[1]["via"] == "session"


async def test_the_forwarded_address_is_believed_from_trusted_proxies_only(
    tmp_path: Path, store: Store, client: Client
) -> None:
    import httpx

    from tests.controlplane.auth_helpers import make_token

    token = make_token(store)
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "198.51.100.9, 10.0.0.2"}
    for trusted, address, header in [
        ((), "127.0.0.1", None),
        (("127.0.0.1", "10.0.0.0/8"), "198.51.100.9", "198.51.100.9, 10.0.0.2"),
    ]:
        app = create_app(settings(tmp_path, trusted_proxies=trusted), store=store, mqtt=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cp") as c:
            response = await c.post("/api/v1/tokens", json={}, headers=headers)
            assert response.status_code == 201
            page = (await c.get("/api/v1/audit", headers=headers, params={"limit": 1})).json()
        record = page["records"][0]
        assert (record["address"], record["forwarded_for"]) == (address, header)


@pytest.mark.parametrize(
    ("peer", "header", "trusted", "expected"),
    [
        ("203.0.113.1", "198.51.100.9", [], ("203.0.113.1", None)),
        ("10.0.0.1", None, ["10.0.0.0/8"], ("10.0.0.1", None)),
        ("10.0.0.1", "198.51.100.9", ["10.0.0.0/8"], ("198.51.100.9", "198.51.100.9")),
        # the client wrote the leftmost hop itself: the rightmost untrusted one counts
        ("10.0.0.1", "1.2.3.4, 198.51.100.9", ["10.0.0.0/8"],
         ("198.51.100.9", "1.2.3.4, 198.51.100.9")),
        ("10.0.0.1", "198.51.100.9, 10.0.0.7", ["10.0.0.0/8"],
         ("198.51.100.9", "198.51.100.9, 10.0.0.7")),
        ("10.0.0.1", "10.0.0.5", ["10.0.0.0/8"], ("10.0.0.5", "10.0.0.5")),
        ("::1", "2001:db8::1", ["::1"], ("2001:db8::1", "2001:db8::1")),
        ("203.0.113.1", "198.51.100.9", ["10.0.0.0/8"], ("203.0.113.1", None)),
    ],
)  # fmt: skip
def test_client_address(
    peer: str, header: str | None, trusted: list[str], expected: tuple[str, str | None]
) -> None:
    assert client_address(peer, header, parse_networks(trusted)) == expected


def test_target_keeps_path_and_query_parameters_but_never_secrets() -> None:
    query = [("device", "cam-1"), ("token", "eft_x"), ("api_key", "k"), ("since", "5")]
    assert target_of({"id": 7}, query) == {
        "id": "7",
        "query": {"device": "cam-1", "token": REDACTED, "api_key": REDACTED, "since": "5"},
    }
    with pytest.raises(ValueError, match="nope"):
        parse_networks(["nope"])


async def test_the_table_refuses_update_and_delete(store: Store) -> None:
    def add(conn: sqlite3.Connection) -> None:
        from controlplane.audit.log import Record, append

        append(conn, Record(at=1.0, request_id="r", actor="a", via="token", action="POST /x",
                            method="POST", outcome=200))  # fmt: skip

    await store.transact(add)
    for sql in ["UPDATE audit SET actor = 'someone else'", "DELETE FROM audit"]:

        def tamper(conn: sqlite3.Connection, sql: str = sql) -> None:
            conn.execute(sql)

        with pytest.raises(StoreError, match="append-only"):
            await store.transact(tamper)
    # and outside the application, on the file itself
    conn = sqlite3.connect(store.path)
    try:
        for sql in ["UPDATE audit SET outcome = 200", "DELETE FROM audit WHERE id = 1"]:
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(sql)
        assert conn.execute("SELECT actor FROM audit").fetchall() == [("a",)]
    finally:
        conn.close()


async def test_local_actions_are_recorded_and_exported_as_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    local.create_user(data, "root", "admin", "x" * 16)
    token, view = local.create_token(data, "root", "operator", "ci")
    local.set_password(data, "root", "y" * 16)
    assert view["role"] == "operator" and token.startswith(f"eft_{view['id']}_")
    code = main(["audit", "export", "--data-dir", str(data)])
    out = capsys.readouterr()
    assert code == 0, out.err
    lines = [json.loads(line) for line in out.out.splitlines()]
    assert [r["action"] for r in lines] == [
        "local users create", "local tokens create", "local users passwd",
    ]  # fmt: skip
    assert all(r["via"] == "local" and r["actor"].startswith("local:") for r in lines)
    assert lines[1]["detail"] == {"role": "operator", "token_id": view["id"], "user": "root"}
    assert token not in out.out and "x" * 16 not in out.out
    code = main(["audit", "export", "--data-dir", str(data), "--since", "x"])
    assert code == 1 and "since" in capsys.readouterr().err
