"""The operators' CLI as real subprocesses against a real ``edgefleet serve`` with auth on: the
first admin through the data directory, a token made with a password, commands that work with
``EDGEFLEET_TOKEN`` and fail clearly without it, roles, revocation, and the audit export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from controlplane.cli import serve_argv
from tests.e2e.processes import ROOT, Process, wait_until
from tests.mosquitto import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PASSWORD = "a long enough passphrase"


def edgefleet(
    *argv: str, token: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEFLEET_TOKEN", "EDGEFLEET_SERVER")}
    if token is not None:
        env["EDGEFLEET_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-m", "controlplane", *argv], input=stdin, capture_output=True,
        text=True, env=env, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_first_admin_tokens_roles_revocation_and_audit_export(
    broker_url: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    argv = serve_argv(
        broker_url, f"127.0.0.1:{port}", data, "--client-id", f"cp-{uuid.uuid4().hex[:8]}",
        "--auth", "true",
    )  # fmt: skip
    server = Process("controlplane", argv, tmp_path)
    server.start()
    try:
        wait_until("health", lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, server)
        s = ("--server", url)

        # nothing works before the first admin, and the message says how to make one
        done = edgefleet("devices", "list", *s)
        assert done.returncode == 1 and "edgefleet users create NAME --admin" in done.stderr
        assert "HTTP 503" in done.stderr

        done = edgefleet(
            "users", "create", "alice", "--admin", "--data-dir", str(data), "--password-stdin",
            stdin=PASSWORD + "\n",
        )  # fmt: skip
        assert done.returncode == 0 and "created user alice (admin)" in done.stdout, done.stderr

        # without a token: refused, with a clear message naming the fix
        done = edgefleet("devices", "list", *s)
        assert done.returncode == 1
        assert "authentication required" in done.stderr and "EDGEFLEET_TOKEN" in done.stderr
        assert "HTTP 401" in done.stderr
        done = edgefleet("devices", "list", *s, token="eft_000000000000_" + "x" * 43)
        assert done.returncode == 1 and "invalid token" in done.stderr
        assert "EDGEFLEET_TOKEN" in done.stderr

        # alice makes her token with her password; a wrong one is refused
        bad = edgefleet(
            "tokens", "create", "--login", "alice", "--password-stdin", *s, stdin="nope\n"
        )
        assert bad.returncode == 1 and "wrong user name or password" in bad.stderr
        done = edgefleet(
            "tokens", "create", "--login", "alice", "--password-stdin", "--name", "laptop", *s,
            "--json", stdin=PASSWORD + "\n",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        admin = json.loads(done.stdout)["token"]
        assert json.loads(done.stdout)["role"] == "admin"

        done = edgefleet("devices", "list", "--json", *s, token=admin)
        assert done.returncode == 0, done.stderr  # (the shared broker may hold other devices)
        assert "devices" in json.loads(done.stdout)

        # a viewer, and a token for them made by the admin
        done = edgefleet("users", "create", "bob", "--generate-password", *s, token=admin)
        assert done.returncode == 0 and "created user bob (viewer)" in done.stdout, done.stderr
        assert "password: " in done.stdout and "shown once" in done.stdout
        done = edgefleet("tokens", "create", "--user", "bob", "--json", *s, token=admin)
        assert done.returncode == 0, done.stderr
        bob = json.loads(done.stdout)
        assert bob["role"] == "viewer" and bob["user"] == "bob"
        done = edgefleet("devices", "tag", "cam-1", "site=x", *s, token=bob["token"])
        assert done.returncode == 1 and "needs the operator role" in done.stderr
        assert "HTTP 403" in done.stderr
        done = edgefleet("users", "list", *s, token=bob["token"])
        assert done.returncode == 1 and "admin role" in done.stderr

        done = edgefleet("tokens", "list", "--all", *s, token=admin)
        assert done.returncode == 0 and bob["id"] in done.stdout
        assert bob["token"] not in done.stdout and admin not in done.stdout
        done = edgefleet("tokens", "revoke", bob["id"], *s, token=admin)
        assert done.returncode == 0 and "revoked" in done.stdout
        done = edgefleet("devices", "list", *s, token=bob["token"])
        assert done.returncode == 1 and "was revoked" in done.stderr

        # the audit log, as JSON lines, oldest first
        done = edgefleet("audit", "export", *s, token=admin)
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in done.stdout.splitlines()]
        assert [(r["actor"], r["action"], r["outcome"]) for r in records] == [
            ("local:" + records[0]["actor"].split(":", 1)[1], "local users create", 0),
            (None, "POST /api/v1/tokens", 401),
            ("alice", "POST /api/v1/tokens", 201),
            ("alice", "POST /api/v1/users", 201),
            ("alice", "POST /api/v1/tokens", 201),
            ("bob", "PATCH /api/v1/devices/{id}/tags", 403),
            ("alice", "DELETE /api/v1/tokens/{id}", 200),
        ]
        assert records[2]["via"] == "password" and records[3]["via"] == "token"
        assert records[5]["target"] == {"id": "cam-1"} and records[5]["address"] == "127.0.0.1"
        assert PASSWORD not in done.stdout and admin not in done.stdout
    finally:
        assert server.stop() == 0, server.log()[-3000:]
    assert "Traceback" not in server.log()
