"""The vendored chart library is the pinned release, byte for byte, and nothing the console
serves makes the browser fetch anything from the internet."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "controlplane" / "static" / "vendor" / "uplot"
SCRIPT = ROOT / "scripts" / "vendor-assets"


def test_the_vendored_files_are_the_pinned_versions_recorded_bytes() -> None:
    recorded = json.loads((VENDOR / "VENDORED.json").read_text())
    script = SCRIPT.read_text()
    pinned = re.search(r"^UPLOT_VERSION=(\S+)$", script, re.M)
    integrity = re.search(r"^UPLOT_INTEGRITY=(\S+)$", script, re.M)
    assert pinned and integrity, "scripts/vendor-assets must pin UPLOT_VERSION and its integrity"
    assert recorded["package"] == "uplot"
    assert recorded["version"] == pinned.group(1)
    assert recorded["integrity"] == integrity.group(1)
    assert set(recorded["files"]) == {"uPlot.iife.min.js", "uPlot.min.css", "LICENSE"}
    for name, sha256 in recorded["files"].items():
        digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
        assert digest == sha256, f"{name} differs from uplot@{recorded['version']}: re-run {SCRIPT}"
    assert "MIT" in (VENDOR / "LICENSE").read_text()
    extra = {p.name for p in VENDOR.iterdir()} - set(recorded["files"]) - {"VENDORED.json"}
    assert not extra, f"files not from the package: {extra}"


def test_pages_and_assets_name_no_remote_resource() -> None:
    ours = [
        *(ROOT / "controlplane" / "console" / "templates").glob("*.html"),
        ROOT / "controlplane" / "static" / "console.js",
        ROOT / "controlplane" / "static" / "console.css",
    ]
    remote = re.compile(
        r"""(?:src|href|action)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//"""
    )
    for path in ours:
        assert not remote.search(path.read_text()), f"{path.name} loads something remote"
