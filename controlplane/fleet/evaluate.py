"""``edgefleet models evaluate NAME:VERSION [--against NAME:VERSION]``: a release, and the
incumbent, run over the fleet's stored labelled inputs on this host; the report is stored.

The control plane never imports the agent, so this works as ``edgefleet simulate`` does: it
exports the labelled data set (:func:`controlplane.fleet.data.export_dataset`) and downloads each
release's body and artifact through the API into a temporary folder, then runs
``python -m agent.evaluate`` (the devices' own pre-processing, runtime and post-processing) as a
subprocess that prints JSON, and posts that report to
``POST /api/v1/models/{name}/releases/{version}/evaluations``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from controlplane.fleet.client import FleetClient, FleetError, add_client_flags
from controlplane.fleet.data import export_dataset
from controlplane.fleet.output import emit, table

TARGETS = ("cpu", "onnx")  # what runs on the control plane host, in order of preference
SUFFIX = {"cpu": ".tflite", "onnx": ".onnx"}


def add_evaluate(sub: Any) -> None:
    """Add ``evaluate`` to the ``models`` group's subparsers."""
    p = sub.add_parser("evaluate", help="run a release over the fleet's labelled inputs")
    p.add_argument("release", metavar="NAME:VERSION")
    p.add_argument("--against", metavar="NAME:VERSION", help="the incumbent to compare with")
    p.add_argument("--since", help="only inputs of results made at or after this time")
    p.add_argument("--backends", help="runtime priority on this host (default: litert first)")
    add_client_flags(p)
    p.set_defaults(handler=evaluate)


def parse_ref(text: str) -> tuple[str, str]:
    name, sep, version = text.partition(":")
    if not sep or not name or not version:
        raise FleetError(f"{text!r}: expected NAME:VERSION, like digits-edge:1.1.0")
    return name, version


def fetch_release(client: FleetClient, name: str, version: str, folder: Path) -> tuple[Path, Path]:
    """The release body and its host-runnable artifact, written into ``folder``."""
    view = client.get(f"/api/v1/models/{name}/releases/{version}")
    release = view["sealed"]["release"]
    target = next((t for t in TARGETS if t in release["artifacts"]), None)
    if target is None:
        raise FleetError(
            f"{name}:{version} has no artifact that runs on this host "
            f"(it has {', '.join(sorted(release['artifacts']))}; needs cpu or onnx)"
        )
    sha256 = release["artifacts"][target]["sha256"]
    data = client.get_bytes(f"/api/v1/artifacts/{sha256}")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise FleetError(f"the {target} artifact of {name}:{version} arrived damaged: try again")
    folder.mkdir(parents=True, exist_ok=True)
    artifact = folder / f"{name}-{version}{SUFFIX[target]}"
    artifact.write_bytes(data)
    body = folder / "release.json"
    body.write_text(json.dumps(release))
    return body, artifact


def run_agent_evaluate(argv: list[str]) -> dict[str, Any]:
    """Run ``python -m agent.evaluate`` and return its JSON report (FleetError on failure)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "agent.evaluate", *argv], capture_output=True, text=True
        )
    except OSError as exc:
        raise FleetError(f"cannot run the evaluation: {exc}") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise FleetError(f"the evaluation failed: {lines[-1] if lines else done.returncode}")
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        raise FleetError("the evaluation printed no JSON report") from None
    return report


def evaluate(args: argparse.Namespace) -> int:
    name, version = parse_ref(args.release)
    against = parse_ref(args.against) if args.against else None
    if against is not None and against[0] != name:
        raise FleetError(f"--against {args.against}: compare releases of the same model ({name})")
    with FleetClient.from_args(args) as client, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = export_dataset(client, name, root / "data", since=args.since, labelled=True)
        if data.count == 0:
            raise FleetError(
                f"no labelled input of {name} is stored yet: devices keep inputs with "
                "[samples] control_plane_url set, and a label comes from feedback or the cloud"
            )
        release, artifact = fetch_release(client, name, version, root / "candidate")
        argv = [
            "--data",
            str(root / "data"),
            "--release",
            str(release),
            "--artifact",
            str(artifact),
        ]
        if against is not None:
            rel, art = fetch_release(client, *against, root / "incumbent")
            argv += ["--against-release", str(rel), "--against-artifact", str(art)]
        if args.backends:
            argv += ["--backends", args.backends]
        report = run_agent_evaluate(argv)
        report["dataset"] = {
            "model": name, "digest": data.digest, "samples": data.count,
            "label_sources": dict(data.sources), "since": args.since, "labelled": True,
        }  # fmt: skip
        stored = client.post(f"/api/v1/models/{name}/releases/{version}/evaluations", report)
    emit(args.json, stored, render)
    return 0


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{value:.2%}"


def render(report: dict[str, Any]) -> str:
    runs = [report] + ([report["against"]] if report.get("against") else [])
    rows: list[tuple[Any, ...]] = []
    for run in runs:
        latency = run.get("latency_ms") or {}
        rows.append((
            f"{report['name']}:{run['version']}", run["samples"], _pct(run.get("accuracy")),
            run.get("errors"), latency.get("p50"), latency.get("p95"), run.get("backend"),
        ))  # fmt: skip
    text = [table(rows, ["release", "inputs", "accuracy", "errors", "p50 ms", "p95 ms", "backend"])]
    if report.get("agreement") is not None:
        text.append(f"agreement between the two: {_pct(report['agreement'])}")
    dataset = report["dataset"]
    text.append(f"data set: {dataset['samples']} labelled inputs, digest {dataset['digest'][:12]}")
    against = report.get("against")
    classes: list[tuple[Any, ...]] = []
    for label, c in report.get("per_class", {}).items():
        row: tuple[Any, ...] = (label, c["support"], _pct(c["precision"]), _pct(c["recall"]))
        if against:
            theirs = against.get("per_class", {}).get(label, {})
            row += (_pct(theirs.get("precision")), _pct(theirs.get("recall")))
        classes.append(row)
    header = ["class", "inputs", "precision", "recall"]
    if against:
        header += [f"precision {against['version']}", f"recall {against['version']}"]
    if classes:
        text.append(table(classes, header))
    return "\n".join(text)
