"""``python -m agent.evaluate``: run a release (and an incumbent) over a labelled data set exported
by ``edgefleet data export``, exactly as a device would (:class:`agent.inference.ServedModel`: the
same pre-processing, runtime and post-processing), and print the figures as JSON on stdout.

``edgefleet models evaluate`` runs this as a subprocess on the control plane host (the control
plane never imports the agent), then stores the report. The metrics are pure functions
(:func:`classification_figures`, :func:`agreement`, :func:`latency_summary`).

Errors (an unreadable data set, a model that does not load) end with one line on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import AgentError
from agent.inference import ServedModel
from agent.offload.deferred import unpack_inputs
from protocol.errors import ProtocolError
from protocol.messages import InferenceResult
from protocol.release import Release

TARGETS = ("cpu", "onnx")
"""Which artifact of a release runs on the host, in order of preference."""


# -- metrics (pure) ----------------------------------------------------------------------------


def classification_figures(truth: Sequence[str], predicted: Sequence[str | None]) -> dict[str, Any]:
    """Accuracy and, per class seen in either list, precision, recall and support.

    A None prediction (the model failed on the input, or gives no classes) counts as wrong. A
    class never predicted has precision None; one with no true inputs has recall None."""
    if len(truth) != len(predicted):
        raise ValueError("truth and predictions differ in length")
    classes = sorted({*truth, *(p for p in predicted if p is not None)}, key=_label_order)
    per_class: dict[str, dict[str, Any]] = {}
    for label in classes:
        tp = sum(1 for t, p in zip(truth, predicted, strict=True) if t == label and p == label)
        support = sum(1 for t in truth if t == label)
        chosen = sum(1 for p in predicted if p == label)
        per_class[label] = {
            "support": support,
            "predicted": chosen,
            "precision": _ratio(tp, chosen),
            "recall": _ratio(tp, support),
        }
    correct = sum(1 for t, p in zip(truth, predicted, strict=True) if p is not None and t == p)
    return {"samples": len(truth), "correct": correct, "accuracy": _ratio(correct, len(truth)),
            "per_class": per_class}  # fmt: skip


def agreement(a: Sequence[str | None], b: Sequence[str | None]) -> float | None:
    """The share of inputs on which two models give the same top class (both answering)."""
    if len(a) != len(b):
        raise ValueError("the two prediction lists differ in length")
    both = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    return _ratio(sum(1 for x, y in both if x == y), len(both))


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """Mean and nearest-rank percentiles of the per-input latencies, in milliseconds."""
    if not latencies_ms:
        return {"mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(latencies_ms)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {
        "mean": round(sum(ordered) / len(ordered), 4),
        "p50": rank(0.50),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": ordered[-1],
    }


def top_label(result: InferenceResult) -> str | None:
    """The top class as a label (its index as text when the model has no labels)."""
    if not result.classes:
        return None
    best = result.classes[0]
    return best.label if best.label is not None else str(best.index)


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 6) if b else None


def _label_order(label: str) -> tuple[int, int | str]:
    return (0, int(label)) if label.isdigit() else (1, label)


# -- the data set ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    path: Path
    label: str


def read_dataset(root: Path) -> list[Case]:
    """The labelled inputs of an export (``labels.csv``; unlabelled rows are skipped)."""
    index = root / "labels.csv"
    try:
        with index.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise AgentError(f"cannot read the data set {index}: {exc.strerror or exc}") from None
    cases = []
    for number, row in enumerate(rows, start=2):
        if not row.get("path"):
            raise AgentError(f"{index}, line {number}: no path (is this an edgefleet export?)")
        if row.get("label"):
            cases.append(Case(root / row["path"], row["label"]))
    return cases


# -- running -----------------------------------------------------------------------------------


@dataclass
class Run:
    predicted: list[str | None]
    latencies_ms: list[float]
    errors: int
    backend: str
    name: str
    version: str


def load_release(release_file: Path, artifact: Path, backends: list[str] | None) -> ServedModel:
    try:
        release = Release.model_validate_json(release_file.read_bytes())
    except OSError as exc:
        raise AgentError(f"cannot read {release_file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise AgentError(f"{release_file} is not a release: {exc}") from None
    target = next((t for t in TARGETS if t in release.artifacts), None)
    if target is None:
        raise AgentError(
            f"release {release.name}:{release.version} has no artifact that runs on this host "
            f"(it has {', '.join(release.artifacts)}; needs one of {', '.join(TARGETS)})"
        )
    return ServedModel.load(
        artifact, manifest=release.manifest(target, artifact.name), priority=backends
    )


async def run_model(served: ServedModel, cases: Sequence[Case]) -> Run:
    predicted: list[str | None] = []
    latencies: list[float] = []
    errors = 0
    for case in cases:
        data = case.path.read_bytes()
        try:
            if case.path.suffix == ".npz":
                output = await served.infer(unpack_inputs(data))
            else:
                output = await served.infer_image(data)
        except AgentError:
            errors += 1
            predicted.append(None)
            continue
        predicted.append(top_label(output.result))
        latencies.append(output.result.latency_ms)
    return Run(predicted, latencies, errors, served.backend, served.name, served.version)


def report(run: Run, truth: Sequence[str]) -> dict[str, Any]:
    return {
        "model": run.name,
        "version": run.version,
        "backend": run.backend,
        **classification_figures(truth, run.predicted),
        "errors": run.errors,
        "latency_ms": latency_summary(run.latencies_ms),
    }


async def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    cases = read_dataset(args.data)
    if not cases:
        raise AgentError(f"the data set {args.data} has no labelled input")
    truth = [c.label for c in cases]
    backends = args.backends.split(",") if args.backends else None
    runs = []
    pairs = [(args.release, args.artifact)]
    if args.against_release is not None:
        pairs.append((args.against_release, args.against_artifact))
    for release_file, artifact in pairs:
        served = load_release(release_file, artifact, backends)
        try:
            runs.append(await run_model(served, cases))
        finally:
            served.close()
    out = report(runs[0], truth)
    out["against"] = None
    out["agreement"] = None
    if len(runs) > 1:
        out["against"] = report(runs[1], truth)
        out["agreement"] = agreement(runs[0].predicted, runs[1].predicted)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m agent.evaluate", description=__doc__.splitlines()[0]
    )
    p.add_argument("--data", type=Path, required=True, help="an `edgefleet data export` folder")
    p.add_argument("--release", type=Path, required=True, help="the release body (JSON)")
    p.add_argument("--artifact", type=Path, required=True, help="its cpu (or onnx) artifact")
    p.add_argument("--against-release", type=Path, help="the incumbent's release body")
    p.add_argument("--against-artifact", type=Path, help="the incumbent's artifact")
    p.add_argument("--backends", help="backend priority, e.g. litert,onnxruntime")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.against_release is None) != (args.against_artifact is None):
        print("agent.evaluate: error: give --against-release and --against-artifact together",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        out = asyncio.run(evaluate(args))
    except (AgentError, ProtocolError, OSError) as exc:
        print(f"agent.evaluate: error: {exc}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
