"""``edgefleet data export``: the fleet's kept inputs as a labelled data set on disk
(``data delete``, ``data rotate-key`` and ``data keys`` are in :mod:`controlplane.fleet.custody`).

The layout (docs/data.md)::

    OUT/images/<label>/<device>_<result>.<ext>   each input as the device got it (.png, .jpg, .npz)
    OUT/images/_unlabelled/...                   inputs with no label yet (not with --labelled)
    OUT/labels.csv                               one row per input: path, ids, version, label,
                                                 label source (feedback | cloud | edge), ...
    OUT/dataset.json                             what was exported, and its digest

Each input carries the best label known for it (operator feedback, else the cloud model's
answer, else the device's own). Pages come from ``GET /api/v1/datasets/{model}`` and each input
from its ``sample_url``, checked against its SHA-256; progress goes to stderr. The digest names
the exact inputs and labels, so two evaluations on the same digest saw the same data.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.fleet import custody
from controlplane.fleet.client import FleetClient, FleetError, add_client_flags
from controlplane.fleet.output import Progress, emit, table

UNLABELLED = "_unlabelled"
COLUMNS = (
    "path", "result_id", "device_id", "model", "model_version", "label", "label_source",
    "confidence", "reason", "created_at", "sha256",
)  # fmt: skip
EXTENSIONS = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
    "image/bmp": ".bmp", "application/x-npz": ".npz",
}  # fmt: skip
PAGE = 500


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("export", help="write a model's kept inputs with their labels to OUT")
    p.add_argument("out", type=Path, metavar="OUT", help="a new (or empty) folder")
    p.add_argument("--model", required=True, help="the model name the results carry")
    p.add_argument("--since", help="only inputs of results made at or after (ISO 8601 or Unix s)")
    p.add_argument(
        "--labelled", action="store_true", help="only inputs with feedback or a cloud answer"
    )
    add_client_flags(p)
    p.set_defaults(handler=export)
    custody.configure(sub)  # delete, rotate-key, keys


# -- naming (pure) ---------------------------------------------------------------------------------


def label_dir(label: str | None) -> str:
    """A label as a directory name: safe characters kept, others ``_`` (labels.csv has it as is)."""
    if label is None:
        return UNLABELLED
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", label)[:64]
    return "_" + name if name.strip(".") == "" or name == UNLABELLED else name


def file_name(item: dict[str, Any]) -> str:
    ext = EXTENSIONS.get(item["content_type"], ".bin")
    return f"{item['device_id']}_{item['result_id']}{ext}"


def digest_line(item: dict[str, Any]) -> bytes:
    return f"{item['device_id']}\t{item['result_id']}\t{item['sha256']}\t{item['label']}\n".encode()


# -- export ----------------------------------------------------------------------------------------


@dataclass
class Exported:
    model: str
    out: Path
    count: int = 0
    bytes: int = 0
    digest: str = ""
    sources: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model, "out": str(self.out), "count": self.count, "bytes": self.bytes,
            "digest": self.digest, "label_sources": dict(self.sources),
        }  # fmt: skip


def prepare(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FleetError(f"{out} exists and is not an empty folder: export into a new one")
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FleetError(f"cannot create {out}: {exc.strerror or exc}") from None


def export_dataset(
    client: FleetClient,
    model: str,
    out: Path,
    *,
    since: str | None = None,
    labelled: bool = False,
    page: int = PAGE,
) -> Exported:
    """Write the data set of ``model`` to ``out`` (see the module docstring)."""
    prepare(out)
    done = Exported(model, out)
    digest = hashlib.sha256()
    progress = Progress(f"export {model}")
    params: dict[str, Any] = {"limit": page}
    if since is not None:
        params["since"] = since
    if labelled:
        params["labelled"] = "true"
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        while True:
            body = client.get(f"/api/v1/datasets/{model}", params)
            for item in body["items"]:
                row = _write_input(client, out, model, item)
                writer.writerow(row)
                digest.update(digest_line(item))
                done.count += 1
                done.bytes += int(item["size"])
                done.sources[item["label_source"] or "none"] += 1
            progress.update(f"{done.count} inputs")
            if not body.get("next_cursor"):
                break
            params["cursor"] = body["next_cursor"]
    done.digest = digest.hexdigest()
    meta = {**done.summary(), "since": since, "labelled": labelled, "exported_at": time.time()}
    (out / "dataset.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    progress.done(f"{done.count} inputs, digest {done.digest[:12]}")
    return done


def _write_input(
    client: FleetClient, out: Path, model: str, item: dict[str, Any]
) -> dict[str, Any]:
    data = client.get_bytes(item["sample_url"])
    if hashlib.sha256(data).hexdigest() != item["sha256"]:
        raise FleetError(f"the input of result {item['result_id']} arrived damaged: export again")
    relative = Path("images") / label_dir(item["label"]) / file_name(item)
    target = out / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return {
        "path": relative.as_posix(), "result_id": item["result_id"],
        "device_id": item["device_id"], "model": model, "model_version": item["model_version"],
        "label": item["label"] or "", "label_source": item["label_source"] or "",
        "confidence": "" if item["confidence"] is None else item["confidence"],
        "reason": item["reason"], "created_at": item["created_at"], "sha256": item["sha256"],
    }  # fmt: skip


def export(args: argparse.Namespace) -> int:
    with FleetClient.from_args(args) as client:
        done = export_dataset(
            client, args.model, args.out, since=args.since, labelled=args.labelled
        )
    emit(args.json, done.summary(), _render)
    return 0


def _render(summary: dict[str, Any]) -> str:
    sources = ", ".join(f"{n} {s}" for s, n in sorted(summary["label_sources"].items()))
    rows = [
        ("model", summary["model"]),
        ("inputs", summary["count"]),
        ("labels", sources or None),
        ("folder", summary["out"]),
        ("digest", summary["digest"]),
    ]
    return table(rows, ["field", "value"])
