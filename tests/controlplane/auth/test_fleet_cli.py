"""``edgefleet users|tokens|audit`` in process against a live control plane (uvicorn in a
thread, ``auth`` on): the commands an admin runs, their output and their errors."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.settings import Settings
from tests.live import live_control_plane, run_cli

Capture = pytest.CaptureFixture[str]


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    data_dir = tmp_path / "data"

    def settings(listen: str) -> Settings:
        return Settings(broker="mqtt://127.0.0.1:1", data_dir=data_dir, listen=listen, auth=True)

    with live_control_plane(settings, monkeypatch) as url:  # sets EDGEFLEET_TOKEN: an admin's
        yield url


def test_an_admin_manages_users_and_tokens(capsys: Capture, server: str) -> None:
    s = ("--server", server)
    code, out, err = run_cli(capsys, "users", "create", "ann", "--role", "operator",
                             "--no-password", *s)  # fmt: skip
    assert code == 0 and "created user ann (operator)" in out, err
    code, out, err = run_cli(capsys, "users", "create", "ann", "--no-password", *s)
    assert code == 1 and "exists already" in err and "HTTP 409" in err
    code, out, err = run_cli(capsys, "users", "create", "bad name", "--no-password", *s)
    assert code == 1 and "user name" in err
    code, out, _ = run_cli(capsys, "users", "list", *s)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["NAME", "ROLE", "STATE", "PASSWORD"]
    assert [r.split()[:4] for r in rows if r.startswith("ann")] == [
        ["ann", "operator", "enabled", "no"]
    ]
    code, out, _ = run_cli(capsys, "users", "set-role", "ann", "viewer", *s)
    assert code == 0 and out.strip() == "ann: viewer, enabled"
    code, out, _ = run_cli(capsys, "users", "disable", "ann", *s, "--json")
    assert code == 0 and json.loads(out)["disabled"] is True
    code, out, _ = run_cli(capsys, "users", "enable", "ann", *s)
    assert code == 0 and out.strip() == "ann: viewer, enabled"
    code, out, err = run_cli(capsys, "users", "disable", "test-admin", *s)
    assert code == 1 and "last enabled admin" in err

    code, out, err = run_cli(capsys, "tokens", "create", "--user", "ann", "--name", "ci", *s)
    assert code == 0, err
    token = out.splitlines()[1]
    assert token.startswith("eft_") and "shown once" in out and "(viewer) for ann" in out
    code, out, _ = run_cli(capsys, "tokens", "list", "--user", "ann", *s)
    assert code == 0 and "ci" in out and "active" in out and token not in out
    token_id = token[4:16]
    code, out, _ = run_cli(capsys, "tokens", "revoke", token_id, *s)
    assert code == 0 and out.strip() == f"token {token_id} of ann revoked"
    code, out, _ = run_cli(capsys, "tokens", "list", "--user", "ann", *s)
    assert "revoked" in out
    code, out, err = run_cli(capsys, "tokens", "create", "--role", "root", *s)
    assert code == 2 and "invalid choice" in err
    code, out, err = run_cli(capsys, "tokens", "create", "--expires", "soon", *s)
    assert code == 2 and "--expires" in err

    code, out, _ = run_cli(capsys, "audit", "list", *s)
    assert code == 0
    assert "DELETE /api/v1/tokens/{id}" in out.splitlines()[1], "newest first"
    code, out, _ = run_cli(capsys, "audit", "export", "--actor", "test-admin", *s)
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["action"] == "POST /api/v1/users" and len(records) >= 8
    assert {r["actor"] for r in records} == {"test-admin"}


def test_passwords_are_never_flags_and_need_a_terminal_or_stdin(
    capsys: Capture, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = ("--server", server)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run_cli(capsys, "users", "create", "pat", *s)
    assert code == 1 and "--password-stdin" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    code, _, err = run_cli(capsys, "users", "create", "pat", "--password-stdin", *s)
    assert code == 1 and "12 characters" in err
    code, out, err = run_cli(capsys, "users", "create", "pat", "--generate-password", *s)
    assert code == 0, err
    password = out.split("password: ")[1].split()[0]
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    monkeypatch.delenv("EDGEFLEET_TOKEN")
    code, out, err = run_cli(capsys, "tokens", "create", "--login", "pat", "--password-stdin", *s)
    assert code == 0 and "(viewer) for pat" in out, err
    code, _, err = run_cli(capsys, "users", "list", *s)
    assert code == 1 and "authentication required" in err and "EDGEFLEET_TOKEN" in err
    code, _, err = run_cli(capsys, "users", "list", *s, "--token", out.splitlines()[1])
    assert code == 1 and "admin role" in err and "HTTP 403" in err
