"""``edgefleet models push|list|show``: the model registry from the command line.

``push`` reads everything it will send before it uploads anything (artifacts, manifest, labels,
golden inputs), so a typo costs no upload; it hashes each artifact and skips the upload when the
registry already has those bytes (``HEAD``), then asks the control plane to build and sign the
release, which checks the artifacts against the manifest and answers with the problem if not.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.fleet.client import FleetClient, FleetError, add_client_flags
from controlplane.fleet.evaluate import add_evaluate
from controlplane.fleet.output import Progress, emit, size, table, when
from controlplane.fleet.triton_export import configure_export

TARGETS = ("cpu", "edgetpu", "onnx")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("push", help="upload artifacts and create a signed release")
    p.add_argument("name", help="the model name, e.g. digits")
    p.add_argument("version", help="the release version, e.g. 1.2.0")
    p.add_argument(
        "--artifact",
        action="append",
        default=[],
        metavar="TARGET=FILE",
        help="an artifact per target: cpu=m.tflite, edgetpu=m_edgetpu.tflite, onnx=m.onnx",
    )
    p.add_argument("--manifest", type=Path, help="model manifest JSON (tensors, pre/post, golden)")
    p.add_argument("--labels", type=Path, help="labels file, one label per line")
    p.add_argument("--force", action="store_true", help="upload artifacts the registry has too")
    add_client_flags(p)
    p.set_defaults(handler=push)
    p = sub.add_parser("list", help="the models in the registry")
    add_client_flags(p)
    p.set_defaults(handler=list_models)
    p = sub.add_parser("show", help="a model's releases, or one release (NAME:VERSION)")
    p.add_argument("ref", metavar="NAME[:VERSION]")
    add_client_flags(p)
    p.set_defaults(handler=show)
    add_evaluate(sub)  # models evaluate: controlplane/fleet/evaluate.py (docs/data.md)
    configure_export(sub)


# -- reading the inputs (before any upload) --------------------------------------------------------


@dataclass(frozen=True)
class LocalArtifact:
    target: str
    path: Path
    sha256: str
    size: int


def parse_artifacts(specs: list[str]) -> list[LocalArtifact]:
    """``TARGET=FILE`` flags, each file read and hashed."""
    if not specs:
        raise FleetError("give at least one --artifact TARGET=FILE (targets: cpu, edgetpu, onnx)")
    found: dict[str, LocalArtifact] = {}
    for spec in specs:
        target, sep, file = spec.partition("=")
        if not sep or not file:
            raise FleetError(f"--artifact {spec!r}: expected TARGET=FILE, e.g. cpu=model.tflite")
        if target not in TARGETS:
            raise FleetError(
                f"--artifact {spec!r}: unknown target {target!r} ({', '.join(TARGETS)})"
            )
        if target in found:
            raise FleetError(f"--artifact: two files for the {target} target")
        sha256, length = hash_file(Path(file))
        found[target] = LocalArtifact(target, Path(file), sha256, length)
    return list(found.values())


def hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    length = 0
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
                length += len(chunk)
    except OSError as exc:
        raise FleetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if length == 0:
        raise FleetError(f"{path} is empty")
    return digest.hexdigest(), length


def read_labels(path: Path) -> list[str]:
    """One label per line (trailing blank lines ignored); an error names an unusable file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetError(f"cannot read labels {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise FleetError(f"labels {path}: not UTF-8 text") from None
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise FleetError(f"labels {path} is empty: give one label per line")
    blank = [i + 1 for i, label in enumerate(labels) if not label]
    if blank:
        raise FleetError(f"labels {path}: line {blank[0]} is blank")
    return labels


def read_manifest(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The manifest (without its golden entries and artifacts) and the golden inputs, each one's
    file (relative to the manifest) read and encoded as base64."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FleetError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise FleetError(f"manifest {path} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise FleetError(f"manifest {path}: expected a JSON object")
    entries = raw.pop("golden", None) or []
    raw.pop("artifacts", None)
    if not isinstance(entries, list):
        raise FleetError(f"manifest {path}: golden must be a list")
    golden = [_golden(path, i, e) for i, e in enumerate(entries)]
    return raw, golden


def _golden(manifest: Path, i: int, entry: Any) -> dict[str, Any]:
    where = f"manifest {manifest}: golden[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("input"), str):
        raise FleetError(f"{where}: expected an object with an input")
    out = {k: entry[k] for k in ("expected_label", "expected_index", "expected_scores",
                                 "tolerance") if entry.get(k) is not None}  # fmt: skip
    file = manifest.parent / entry["input"]
    if file.is_file():
        try:
            out["input"] = base64.b64encode(file.read_bytes()).decode()
        except OSError as exc:
            raise FleetError(f"{where}: cannot read {file}: {exc.strerror}") from None
        return out
    try:
        base64.b64decode(entry["input"], validate=True)
    except (binascii.Error, ValueError):
        raise FleetError(f"{where}: no file {file} (and the input is not base64)") from None
    out["input"] = entry["input"]
    return out


# -- commands --------------------------------------------------------------------------------------


def push(args: argparse.Namespace) -> int:
    artifacts = parse_artifacts(args.artifact)
    manifest, golden = read_manifest(args.manifest) if args.manifest else ({}, [])
    body: dict[str, Any] = {
        "version": args.version,
        "artifacts": {a.target: a.sha256 for a in artifacts},
        "manifest": manifest,
        "golden": golden,
    }
    if args.labels is not None:
        body["labels"] = read_labels(args.labels)
    with FleetClient.from_args(args) as client:
        for artifact in artifacts:
            upload(client, artifact, force=args.force)
        release = client.post(f"/api/v1/models/{args.name}/releases", body)
    emit(args.json, release, render_release)
    return 0


def upload(client: FleetClient, artifact: LocalArtifact, *, force: bool = False) -> None:
    label = f"{artifact.target} {artifact.path.name}"
    if not force and exists(client, artifact.sha256):
        Progress(label).done(f"already in the registry ({artifact.sha256[:12]})")
        return
    progress = Progress(label)
    answer = client.upload("/api/v1/artifacts", artifact.path, progress=progress.bytes)
    if answer.get("sha256") != artifact.sha256:
        raise FleetError(
            f"{artifact.path} changed while it was uploaded (the registry got "
            f"{answer.get('sha256')}, the file hashed to {artifact.sha256}): push again"
        )
    progress.done(f"uploaded {size(artifact.size)} ({artifact.sha256[:12]})")


def exists(client: FleetClient, sha256: str) -> bool:
    try:
        client.request("HEAD", f"/api/v1/artifacts/{sha256}")
    except FleetError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def list_models(args: argparse.Namespace) -> int:
    with FleetClient.from_args(args) as client:
        body = client.get("/api/v1/models")
    emit(args.json, body, _render_list)
    return 0


def _render_list(body: dict[str, Any]) -> str:
    rows = [
        (m["name"], m["latest_version"], m["latest_seq"], m["releases"], when(m["updated_at"]))
        for m in body["models"]
    ]
    if not rows:
        return "no models yet: edgefleet models push NAME VERSION --artifact cpu=model.tflite"
    return table(rows, ["name", "latest", "seq", "releases", "pushed"])


def show(args: argparse.Namespace) -> int:
    name, _, version = args.ref.partition(":")
    if not name:
        raise FleetError(f"{args.ref!r}: expected NAME or NAME:VERSION")
    with FleetClient.from_args(args) as client:
        if version:
            body = client.get(f"/api/v1/models/{name}/releases/{version}")
            emit(args.json, body, render_release)
        else:
            body = client.get(f"/api/v1/models/{name}")
            emit(args.json, body, _render_releases)
    return 0


def _render_releases(body: dict[str, Any]) -> str:
    rows = [
        (r["version"], r["seq"], ",".join(r["targets"]), when(r["created_at"]), r["description"])
        for r in body["releases"]
    ]
    return table(rows, ["version", "seq", "targets", "pushed", "description"])


def render_release(body: dict[str, Any]) -> str:
    release = body["sealed"]["release"]
    tensors = [
        f"{t['name']} {t['datatype']} {t['shape']}" for t in release["inputs"] + release["outputs"]
    ]
    pairs: list[tuple[str, Any]] = [
        ("release", f"{body['name']}:{body['version']}"),
        ("seq", body["seq"]),
        ("pushed", when(body["created_at"])),
        ("signed by", body["key_id"]),
        ("description", body.get("description") or None),
        ("tensors", "; ".join(tensors)),
        ("preprocess", release["preprocess"].get("type")),
        ("postprocess", release["postprocess"].get("type")),
        ("labels", len(release["labels"]) or None),
        ("golden", len(release["golden"]) or None),
        ("running on", body.get("running_on")),
    ]
    for target, artifact in sorted(body["artifacts"].items()):
        pairs.append((f"artifact {target}", f"{artifact['sha256']} ({size(artifact['size'])})"))
    for metric, value in sorted(release.get("metrics", {}).items()):
        pairs.append((f"metric {metric}", value))
    return table(pairs, ["field", "value"])
