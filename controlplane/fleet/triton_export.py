"""``edgefleet models export-triton NAME[:VERSION] OUT_DIR``: a release as a Triton model.

Writes ``OUT_DIR/NAME/config.pbtxt`` (:mod:`controlplane.registry.triton`), ``labels.txt`` for a
classifier with labels, and ``OUT_DIR/NAME/<seq>/model.onnx``: the release's ``onnx`` artifact,
downloaded over the API (``GET /api/v1/artifacts/{sha256}``), so it runs from any machine that
reaches the control plane. The download is checked against the release's SHA-256 before it
replaces anything; the config is written from the tensors ONNX Runtime reports for the file.
Other versions already in ``OUT_DIR/NAME`` are left as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from controlplane.argtypes import whole_number
from controlplane.fleet.client import (
    SERVER_ENV,
    FleetClient,
    FleetError,
    add_client_flags,
    decode,
)
from controlplane.fleet.output import Progress, emit, table
from controlplane.registry.artifacts import NotAModel, inspect_onnx
from controlplane.registry.triton import (
    LABELS_FILE,
    TritonExportError,
    TritonOptions,
    config_pbtxt,
    labels_text,
)
from protocol.release import Release

CHUNK = 1024 * 1024


def configure_export(sub: Any) -> None:
    """Add ``export-triton`` to the ``models`` group's subparsers."""
    p = sub.add_parser(
        "export-triton", help="write a release as a Triton model repository entry (ONNX)"
    )
    p.add_argument("ref", metavar="NAME[:VERSION]", help="the release (default: the latest)")
    p.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="the model repository")
    p.add_argument(
        "--model-name", metavar="NAME", help="the model's name in Triton (default: NAME)"
    )
    p.add_argument(
        "--max-batch-size",
        type=whole_number(0),
        default=None,
        metavar="N",
        help="largest batch (default 32 when the model batches, else 0: no batching)",
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=whole_number(0),
        default=2000,
        metavar="US",
        help="dynamic batcher: longest wait to fill a batch (default 2000)",
    )
    p.add_argument(
        "--max-queue-size",
        type=whole_number(0),
        default=256,
        metavar="N",
        help="requests queued at most, then 503 (default 256; 0: unbounded)",
    )
    p.add_argument(
        "--preferred-batch-size",
        type=whole_number(1),
        action="append",
        default=[],
        metavar="N",
        help="a batch size the batcher prefers (repeat for more)",
    )
    p.add_argument(
        "--instances",
        type=whole_number(1),
        default=1,
        metavar="N",
        help="model instances (default 1)",
    )
    p.add_argument(
        "--kind",
        choices=["auto", "gpu", "cpu"],
        default="auto",
        help="where instances run (default auto: a GPU when Triton has one)",
    )
    add_client_flags(p)
    p.set_defaults(handler=export_triton)


def export_triton(args: argparse.Namespace) -> int:
    name, _, version = args.ref.partition(":")
    if not name:
        raise FleetError(f"{args.ref!r}: expected NAME or NAME:VERSION")
    options = TritonOptions(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        max_queue_size=args.max_queue_size,
        preferred_batch_sizes=tuple(args.preferred_batch_size),
        instances=args.instances,
        kind=args.kind,
    )
    with FleetClient.from_args(args) as client:
        if not version:
            releases = client.get(f"/api/v1/models/{name}")["releases"]
            version = releases[0]["version"]  # newest first
        body = client.get(f"/api/v1/models/{name}/releases/{version}")
        try:
            release = Release.model_validate(body["sealed"]["release"])
        except (KeyError, TypeError, ValidationError) as exc:
            raise FleetError(
                f"the control plane sent a release this CLI cannot read: {exc}"
            ) from None
        if "onnx" not in release.artifacts:
            targets = ", ".join(sorted(release.artifacts))
            raise FleetError(
                f"release {name} {version} has no onnx artifact (it has: {targets}); Triton "
                "serves the onnx target: push one with --artifact onnx=model.onnx"
            )
        model_dir = args.out_dir / (args.model_name or name)
        model_file = model_dir / str(release.seq) / "model.onnx"
        artifact = release.artifacts["onnx"]
        if _sha256(model_file) == artifact.sha256:
            Progress(f"onnx {model_file}").done("already there")
        else:
            _download(client, artifact.sha256, artifact.size, model_file)
    try:
        io = inspect_onnx(model_file)
    except NotAModel as exc:
        raise FleetError(f"{model_file}: {exc}") from None
    try:
        config = config_pbtxt(
            release, options, model_name=args.model_name, inputs=io.inputs, outputs=io.outputs
        )
    except TritonExportError as exc:
        raise FleetError(str(exc)) from None
    _write(model_dir / "config.pbtxt", config.encode())
    labels = labels_text(release)
    if labels is not None:
        _write(model_dir / LABELS_FILE, labels.encode())
    summary = {
        "model": args.model_name or name,
        "release": f"{name}:{release.version}",
        "triton_version": release.seq,
        "config": str(model_dir / "config.pbtxt"),
        "model_file": str(model_file),
        "sha256": artifact.sha256,
    }
    emit(args.json, summary, lambda s: table(list(s.items()), ["field", "value"]))
    return 0


def _sha256(path: Path) -> str | None:
    try:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _download(client: FleetClient, sha256: str, size: int, dest: Path) -> None:
    """Stream the artifact to ``dest`` through a temporary file; replaced only once its bytes
    hash to ``sha256``. Through ``client``: its token too (device_auth "required" asks for it)."""
    path = f"/api/v1/artifacts/{sha256}"
    url = f"{client.server}{path}"
    part = dest.with_name(dest.name + ".part")
    progress = Progress(f"onnx {dest}")
    digest = hashlib.sha256()
    received = 0
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with client.stream("GET", path) as response:
            if not response.is_success:
                response.read()
                decode("GET", url, response)  # raises FleetError with the API's message
            with part.open("wb") as fh:
                for chunk in response.iter_bytes(CHUNK):
                    fh.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.bytes(received, size)
                fh.flush()
                os.fsync(fh.fileno())
    except httpx.TimeoutException:
        part.unlink(missing_ok=True)
        raise FleetError(f"GET {url}: no answer in time") from None
    except httpx.HTTPError as exc:
        part.unlink(missing_ok=True)
        raise FleetError(
            f"cannot download {url} ({exc}); pass --server URL or set {SERVER_ENV}"
        ) from None
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise FleetError(f"cannot write {part}: {exc.strerror or exc}") from None
    if digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise FleetError(
            f"the artifact downloaded from {url} hashes to {digest.hexdigest()}, not {sha256}: "
            "not written"
        )
    part.replace(dest)
    progress.done(f"downloaded ({sha256[:12]})")


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(path)
    except OSError as exc:
        raise FleetError(f"cannot write {path}: {exc.strerror or exc}") from None
