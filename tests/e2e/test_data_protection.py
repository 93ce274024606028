"""Kept inputs protected end to end with the real programs, every log at DEBUG: an input marked
with a string the logs must never hold goes from a real agent (sampled, sealed in its spool,
uploaded) to a real control plane (sealed in a file), out through ``edgefleet data export``,
through a key rotation on both sides (refused on the device while its agent runs) and a
deletion; then neither the marker nor a byte of either side's keys is in any log or output, and
the marker is in no file at rest."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image, PngImagePlugin

from protocol.keyring import KeyringFile
from tests.e2e.processes import ROOT, AgentProcess, ControlPlane, cli, digit_pngs, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "digits-edge"
MARKER = b"MARKER-personal-data-do-not-log-5be1"


def marked_png(png: bytes, n: int) -> bytes:
    """A digit PNG that also carries the marker (a text chunk): the model reads it as before."""
    image = Image.open(io.BytesIO(png))
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", (MARKER + str(n).encode()).decode())
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def forms(secret: bytes) -> list[bytes]:
    """How bytes could show in a log: as they are, hex, and base64 at each alignment (the part
    that does not depend on the bytes around them)."""
    found = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + secret)
        found.append(encoded[4:-4])
    return found


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def agent_rotate_key(data_dir: Path, device_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "rotate-key", "--device-id", device_id,
         "--data-dir", str(data_dir), "--log-level", "DEBUG"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


def test_inputs_are_sealed_and_never_logged(broker_url: str, tmp_path: Path, unique: str) -> None:
    cp = ControlPlane(broker_url, tmp_path)
    cp.argv += ["--log-level", "DEBUG"]
    device_id = f"sealed-{unique}"
    agent = AgentProcess(
        broker_url, device_id, tmp_path, "--samples-control-plane-url", cp.url,
        "--samples-share", "1", "--log-level", "DEBUG", "--log-format", "text",
    )  # fmt: skip
    outputs: list[str] = []
    cp.start()
    try:
        agent.start()
        inputs = [marked_png(png, n) for n, (png, _) in enumerate(digit_pngs(3))]
        for data in inputs:
            answer = httpx.post(f"{agent.url}/v1/models/{MODEL}/image", content=data, timeout=10)
            assert answer.status_code == 200, answer.text
        held = wait_until(
            "the inputs on the control plane",
            lambda: cp.get("/api/v1/data", device_id=device_id).json()["inputs"] == 3,
            60, cp, agent,
        )  # fmt: skip
        assert held
        keys = every_key(agent.data_dir, tmp_path / "cp")  # the keys before the rotations

        # at rest: sealed on both sides
        for path in files_under(agent.data_dir) + files_under(tmp_path / "cp"):
            assert MARKER not in path.read_bytes(), path

        # out through the API and the export: as they came
        out = tmp_path / "export"
        exported = cli(cp.url, "data", "export", "--model", MODEL, str(out))
        outputs += [exported.stdout, exported.stderr]
        assert exported.returncode == 0, exported.stderr
        assert sorted(p.read_bytes() for p in (out / "images").rglob("*.png")) == sorted(inputs)

        # rotation on the control plane: the inputs read the same under the new key
        rotated = cli(cp.url, "data", "rotate-key", "--json")
        outputs += [rotated.stdout, rotated.stderr]
        assert rotated.returncode == 0, rotated.stderr
        assert len(json.loads(rotated.stdout)["retired"]) == 1
        results = cp.results(device_id)
        kept = {
            httpx.get(cp.url + r["sample_url"], headers=cp.headers, timeout=10).content
            for r in results
        }
        assert kept == set(inputs)

        # on the device, not while the agent runs
        refused = agent_rotate_key(agent.data_dir, device_id)
        outputs += [refused.stdout, refused.stderr]
        assert refused.returncode == 1 and "an agent is running" in refused.stderr

        deleted = cli(cp.url, "data", "delete", "--device", device_id, "--yes")
        outputs += [deleted.stdout, deleted.stderr]
        assert deleted.returncode == 0 and "deleted 3 kept inputs" in deleted.stdout
        assert cp.get("/api/v1/data", device_id=device_id).json()["inputs"] == 0
    finally:
        agent.stop()
        rotated_offline = agent_rotate_key(agent.data_dir, device_id)
        cp.stop()
    outputs += [rotated_offline.stdout, rotated_offline.stderr]
    assert rotated_offline.returncode == 0, rotated_offline.stderr

    logs = {
        "agent": agent.log_path.read_bytes(), "control plane": cp.log_path.read_bytes(),
        "commands": "\n".join(outputs).encode(),
    }  # fmt: skip
    assert b"DEBUG" in logs["agent"] and b"DEBUG" in logs["control plane"]
    keys |= every_key(agent.data_dir, tmp_path / "cp")  # and after
    assert len(keys) == 4  # two on each side
    secrets = {"the marker": forms(MARKER), "a key": [f for k in keys for f in forms(k)]}
    for name, text in logs.items():
        for what, variants in secrets.items():
            for variant in variants:
                assert variant not in text, f"{what} appears in the {name} log"


def every_key(*data_dirs: Path) -> set[bytes]:
    found = set()
    for data_dir in data_dirs:
        ring = KeyringFile(data_dir / "keys" / "data-keyring.json").load()
        found |= {k.secret for k in ring.keys}
    return found
