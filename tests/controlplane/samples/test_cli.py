"""``edgefleet data delete``, ``data rotate-key`` and ``data keys`` as real processes against a
real control plane (uvicorn on a free port, real store and files): exact counts, other devices
untouched, no deletion without a selection or a confirmation, a question on a terminal."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.settings import Settings
from tests.live import headers, live_control_plane

ROOT = Path(__file__).resolve().parents[3]
NOW = 1_700_000_000.0


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    def settings(listen: str) -> Settings:
        return Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "cp", listen=listen,
                        data_retention_days=0)  # fmt: skip

    with live_control_plane(settings, monkeypatch) as url:
        for device in ("cam-1", "cam-2"):
            for t in (10, 20, 30):
                answer = httpx.put(
                    f"{url}/api/v1/samples/{device}/r{t}", content=f"input {device} {t}".encode(),
                    params={"model": "digits-edge", "model_version": "1", "reason": "sampled",
                            "created_at": str(NOW + t)},
                    headers={"Content-Type": "application/octet-stream"},
                )  # fmt: skip
                assert answer.status_code == 201, answer.text
        yield url


def edgefleet(
    server: str, *argv: str, stdin: int | None = subprocess.DEVNULL
) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "controlplane", "data", *argv, "--server", server],
        capture_output=True, text=True, cwd=ROOT, timeout=120, stdin=stdin,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def held(server: str, device: str) -> int:
    answer = httpx.get(f"{server}/api/v1/data", params={"device_id": device}, headers=headers())
    return int(answer.json()["inputs"])


def test_delete_by_device_and_range_with_yes(server: str) -> None:
    code, out, err = edgefleet(
        server, "delete", "--device", "cam-1", "--since", str(NOW + 15), "--until", str(NOW + 25),
        "--yes",
    )  # fmt: skip
    assert code == 0, err
    assert out.strip() == "deleted 1 kept inputs (14 B)"
    assert httpx.get(f"{server}/api/v1/samples/cam-1/r20", headers=headers()).status_code == 404
    assert (held(server, "cam-1"), held(server, "cam-2")) == (2, 3)
    code, out, err = edgefleet(server, "delete", "--device", "cam-1", "--yes", "--json")
    assert code == 0, err
    assert json.loads(out)["deleted"] == 2
    assert (held(server, "cam-1"), held(server, "cam-2")) == (0, 3)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ((), "no selection"),
        (("--yes",), "no selection"),
        (("--all", "--device", "cam-1", "--yes"), "give it alone"),
        (("--device", "cam-1"), "not a terminal; pass --yes"),  # a script that forgot --yes
        (("--device", "cam/1", "--yes"), "invalid device id"),
        (("--device", "cam-1", "--since", "tomorrow", "--yes"), "since"),
    ],
)
def test_nothing_is_deleted_without_a_selection_or_a_confirmation(
    server: str, argv: tuple[str, ...], words: str
) -> None:
    code, _, err = edgefleet(server, "delete", *argv)
    assert code == 1 and words in err, err
    assert (held(server, "cam-1"), held(server, "cam-2")) == (3, 3)


@pytest.mark.parametrize(("answer", "code", "left"), [(b"y\n", 0, 0), (b"n\n", 1, 3)])
def test_on_a_terminal_it_asks_first(server: str, answer: bytes, code: int, left: int) -> None:
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer)
        got, _, err = edgefleet(server, "delete", "--device", "cam-1", stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert "Delete 3 kept inputs (42 B) of device cam-1? This cannot be undone. [y/N]" in err
    assert got == code
    assert (held(server, "cam-1"), held(server, "cam-2")) == (left, 3)


def test_delete_all_needs_all(server: str) -> None:
    code, out, err = edgefleet(server, "delete", "--all", "--yes")
    assert code == 0, err
    assert out.startswith("deleted 6 kept inputs")


def test_rotate_key_and_keys(server: str) -> None:
    before = httpx.get(f"{server}/api/v1/data/keys", headers=headers()).json()
    (old,) = [k["id"] for k in before["keys"]]
    code, out, err = edgefleet(server, "rotate-key")
    assert code == 0, err
    after = httpx.get(f"{server}/api/v1/data/keys", headers=headers()).json()
    (new,) = [k["id"] for k in after["keys"]]
    assert new != old
    assert out.strip() == f"key {new} is current; retired: {old}"
    assert "every kept input is sealed under" in err
    assert (
        httpx.get(f"{server}/api/v1/samples/cam-2/r30", headers=headers()).content
        == b"input cam-2 30"
    )
    code, out, _ = edgefleet(server, "keys")
    assert code == 0
    header, line = out.splitlines()
    assert header.split() == ["KEY", "CREATED", "CURRENT", "INPUTS"]
    assert line.split()[0] == new and line.split()[-2:] == ["yes", "6"]
    code, out, _ = edgefleet(server, "keys", "--json")
    assert json.loads(out)["keys"][0]["inputs"] == 6
    code, out, err = edgefleet(server, "rotate-key", "--no-wait", "--json")
    assert code == 0 and json.loads(out)["done"] is False
