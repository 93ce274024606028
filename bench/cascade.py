"""The edge-cloud cascade, measured: accuracy against the share of requests offloaded.

``python -m bench.cascade`` runs the edge model (``models/digits/edge_fp32.tflite`` on LiteRT)
and the cloud model (``models/digits/cloud.onnx`` on ONNX Runtime) over the 450-image test split
(``models/digits/testset.npz``). Each image goes through the agent's own pre-processing (PNG
bytes, :func:`agent.preprocess.image_to_tensor` planned from the model's manifest) and its scores
through the manifest's post-processing, so the scores are the ones a device and the cloud tier
would see. It then sweeps the confidence threshold the agent's offload policy uses (offload when
the edge's top score is *under* it, ``[models.offload] min_confidence``): the cascade answers with
the edge model at or above it and with the cloud model below it. It writes the table and the
chosen default to ``docs/cascade.md`` and the curve to ``docs/cascade.svg``.

The curve and the choice are pure functions (:func:`cascade`, :func:`choose`), tested in
``tests/bench/test_cascade.py``; the models are the only I/O.
"""

from __future__ import annotations

import argparse
import io
import math
import platform
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
from PIL import Image

from agent.postprocess import dequantize, softmax
from agent.preprocess import image_to_tensor, plan_image
from agent.runtimes.base import Runtime
from agent.runtimes.litert import open_litert
from agent.runtimes.onnx import open_onnxruntime
from protocol.manifest import ClassificationPostprocess, ImagePreprocess, ModelManifest

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits"
EDGE = DIGITS / "edge_fp32.tflite"
CLOUD = DIGITS / "cloud.onnx"
TESTSET = DIGITS / "testset.npz"

GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999)
"""Thresholds in the table: the edge model is confident, so the interesting ones are near 1."""


# -- the curve (pure) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """The cascade at one threshold."""

    threshold: float
    offloaded: int
    correct: int
    total: int

    @property
    def offload_fraction(self) -> float:
        return self.offloaded / self.total

    @property
    def accuracy(self) -> float:
        return self.correct / self.total


def cascade(
    edge: np.ndarray, cloud: np.ndarray, labels: np.ndarray, thresholds: Sequence[float]
) -> list[Point]:
    """The cascade at each threshold: the edge answers where its top score is >= the threshold,
    the cloud (offloaded) where it is under.

    ``edge`` and ``cloud`` are ``[n, classes]`` score matrices, ``labels`` the ``n`` true classes.
    Threshold 0 is the edge alone; one above every edge score is the cloud alone.
    """
    edge, cloud, labels = np.asarray(edge), np.asarray(cloud), np.asarray(labels)
    if edge.ndim != 2 or edge.shape[0] == 0:
        raise ValueError(f"edge scores: expected an [n, classes] matrix, got shape {edge.shape}")
    if cloud.shape != edge.shape:
        raise ValueError(f"cloud scores have shape {cloud.shape}, the edge's {edge.shape}")
    if labels.shape != (edge.shape[0],):
        raise ValueError(f"labels have shape {labels.shape}, expected ({edge.shape[0]},)")
    top = edge.max(axis=1).astype(np.float64)  # float32 would round a threshold above 1 to 1
    edge_right = edge.argmax(axis=1) == labels
    cloud_right = cloud.argmax(axis=1) == labels
    points = []
    for threshold in thresholds:
        offload = top < threshold
        correct = np.where(offload, cloud_right, edge_right)
        points.append(Point(float(threshold), int(offload.sum()), int(correct.sum()), len(labels)))
    return points


def every_threshold(edge: np.ndarray) -> list[float]:
    """Thresholds at which the cascade changes: 0, each distinct edge top score, and one above
    the highest: infinity (everything offloaded). The curve over these is exact, not sampled."""
    top = np.unique(np.asarray(edge).max(axis=1).astype(np.float64))
    return [0.0, *top.tolist(), math.inf]


def choose(points: Sequence[Point], cloud_accuracy: float) -> Point:
    """The default threshold: the point offloading the fewest requests among those that reach
    the cloud model's accuracy; when none does, the most accurate (then the fewest offloaded)."""
    if not points:
        raise ValueError("no points to choose from")
    reaching = [p for p in points if p.accuracy >= cloud_accuracy]
    if reaching:
        return min(reaching, key=lambda p: (p.offloaded, p.threshold))
    return min(points, key=lambda p: (-p.correct, p.offloaded, p.threshold))


# -- the report (pure) -----------------------------------------------------------------------------


def _pct(value: float, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f} %"


def _gap_closed(point: Point, edge_accuracy: float, cloud_accuracy: float) -> float | None:
    gap = cloud_accuracy - edge_accuracy
    return None if gap <= 0 else (point.accuracy - edge_accuracy) / gap


def render_markdown(
    grid: Sequence[Point], edge: Point, cloud: Point, chosen: Point, facts: Sequence[str]
) -> str:
    """``docs/cascade.md``: the table, the chosen default and what it buys."""
    rows = [
        "| threshold | offloaded | cascade accuracy | errors | share of cloud accuracy | "
        "edge-to-cloud gap closed |",
        "|---|---|---|---|---|---|",
    ]

    def row(label: str, p: Point) -> str:
        closed = _gap_closed(p, edge.accuracy, cloud.accuracy)
        return (
            f"| {label} | {p.offloaded} ({_pct(p.offload_fraction, 1)}) | {_pct(p.accuracy)} | "
            f"{p.total - p.correct} | {_pct(p.accuracy / cloud.accuracy, 1)} | "
            f"{'-' if closed is None else _pct(closed, 0)} |"
        )

    rows.append(row("edge alone", edge))
    for p in grid:
        label = f"**{p.threshold:g}** (default)" if p == chosen else f"{p.threshold:g}"
        rows.append(row(label, p))
    rows.append(row("cloud alone", cloud))
    closed = _gap_closed(chosen, edge.accuracy, cloud.accuracy)
    buys = (
        f"With `min_confidence = {chosen.threshold:g}` the cascade answers "
        f"{_pct(chosen.accuracy)} of the test split right, "
        f"{_pct(chosen.accuracy / cloud.accuracy, 1)} of the cloud model's accuracy "
        f"({_pct(cloud.accuracy)}), while offloading "
        f"{_pct(chosen.offload_fraction, 1)} of requests ({chosen.offloaded} of {chosen.total})"
        + ("" if closed is None else f"; it closes {_pct(closed, 0)} of the edge-to-cloud gap")
        + f". The edge model alone gets {_pct(edge.accuracy)}."
    )
    intro = (
        "How accurate the fleet is against how much it offloads, as the agent's confidence "
        "threshold (`[models.offload] min_confidence`, see docs/agent.md) moves. The agent "
        "offloads a request when the edge model's top score is under the threshold; the "
        "cascade's answer is then the cloud model's, otherwise the edge model's."
    )
    rule = (
        "It is chosen by a fixed rule (`bench.cascade.choose`): among the thresholds in the "
        "table, the one that offloads the fewest requests while matching the cloud model's "
        "accuracy (or, if none does, the most accurate one). It is the default of "
        "`min_confidence` in the agent (`agent/offload/config.py`); "
        "`tests/bench/test_cascade.py` keeps the two in step."
    )
    caveat = (
        "Read it with the sample size in mind: the edge model is wrong on "
        f"{edge.total - edge.correct} of {edge.total} images and the cloud model on "
        f"{cloud.total - cloud.correct}, so each row differs from the next by an image or two. "
        "The shape is the finding: the edge model's wrong answers sit mostly, though not all, "
        "among its less confident ones, so a small share offloaded recovers most of the gap, and "
        "past the default more offloading buys nothing on this data. Re-run the sweep when "
        "either model changes, and on the fleet's own labelled data (`edgefleet data export`) "
        "when there is enough of it."
    )
    legend = (
        "Share of cloud accuracy: cascade accuracy / cloud-alone accuracy. Gap closed: how much "
        "of the accuracy difference between edge alone and cloud alone the cascade recovers. "
        "The plot is exact (the cascade at every distinct edge score), not sampled."
    )
    return "\n".join(
        [
            "# The edge-cloud cascade",
            "",
            _wrap(intro),
            "",
            "```",
            ".venv/bin/python -m bench.cascade      # rewrites this page and docs/cascade.svg",
            "```",
            "",
            *[_wrap(fact, "- ", "  ") for fact in facts],
            "",
            "## The default threshold",
            "",
            _wrap(buys),
            "",
            _wrap(rule),
            "",
            _wrap(caveat),
            "",
            "## The sweep",
            "",
            *rows,
            "",
            _wrap(legend),
            "",
            "![Cascade accuracy against the share of requests offloaded](cascade.svg)",
            "",
        ]
    )


def _wrap(text: str, first: str = "", rest: str = "") -> str:
    return textwrap.fill(
        text, 100, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )


def render_svg(
    curve: Sequence[Point], edge: Point, cloud: Point, chosen: Point, *, width: int = 640
) -> str:
    """The curve as a stand-alone SVG: accuracy (y) against offloaded share (x), the edge and
    cloud models alone as reference lines, the default marked."""
    height = 400
    left, right, top, bottom = 70, 20, 40, 55
    x_max = min(1.0, max(0.25, math.ceil(chosen.offload_fraction * 2 / 0.05) * 0.05))
    lows = [p.accuracy for p in curve if p.offload_fraction <= x_max] + [edge.accuracy]
    y_min = math.floor(min(min(lows), cloud.accuracy) * 100 - 0.5) / 100
    y_max = 1.0

    def sx(x: float) -> float:
        return left + (width - left - right) * min(x, x_max) / x_max

    def sy(y: float) -> float:
        return top + (height - top - bottom) * (y_max - y) / (y_max - y_min)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2:.0f}" y="22" text-anchor="middle" font-size="14">'
        "digits: edge-cloud cascade on the 450-image test split</text>",
    ]
    steps = 5
    for i in range(steps + 1):
        x = x_max * i / steps
        parts.append(
            f'<line x1="{sx(x):.1f}" y1="{top}" x2="{sx(x):.1f}" y2="{height - bottom}" '
            'stroke="#eee"/>'
            f'<text x="{sx(x):.1f}" y="{height - bottom + 16}" text-anchor="middle">'
            f"{100 * x:.0f} %</text>"
        )
    y_steps = round((y_max - y_min) / 0.005)
    for i in range(y_steps + 1):
        y = y_min + 0.005 * i
        parts.append(
            f'<line x1="{left}" y1="{sy(y):.1f}" x2="{width - right}" y2="{sy(y):.1f}" '
            'stroke="#eee"/>'
            f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{100 * y:.1f} %</text>'
        )
    parts.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 14}" text-anchor="middle">'
        "requests offloaded to the cloud model</text>"
        f'<text x="16" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(top + height - bottom) / 2:.0f})">accuracy</text>'
    )
    for point, colour, name in ((edge, "#d62728", "edge alone"), (cloud, "#2ca02c", "cloud alone")):
        y = sy(point.accuracy)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="{colour}" '
            'stroke-dasharray="6 4"/>'
            f'<text x="{width - right - 4}" y="{y - 5:.1f}" text-anchor="end" fill="{colour}">'
            f"{name} {100 * point.accuracy:.2f} %"
            + (" (100 % offloaded)" if point is cloud else "")
            + "</text>"
        )
    ordered = sorted(curve, key=lambda p: (p.offloaded, p.threshold))
    first = ordered[0]
    path = [f"M{sx(first.offload_fraction):.1f} {sy(first.accuracy):.1f}"]
    for p in ordered[1:]:  # steps: the accuracy changes only where one more request goes
        path.append(f"H{sx(p.offload_fraction):.1f} V{sy(p.accuracy):.1f}")
        if p.offload_fraction >= x_max:
            break
    parts.append(f'<path d="{" ".join(path)}" fill="none" stroke="#1f77b4" stroke-width="2"/>')
    cx, cy = sx(chosen.offload_fraction), sy(chosen.accuracy)
    parts.append(
        f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="#1f77b4"/>'
        f'<text x="{cx + 8:.1f}" y="{cy + 18:.1f}">default {chosen.threshold:g}: '
        f"{100 * chosen.offload_fraction:.1f} % offloaded, {100 * chosen.accuracy:.2f} %</text>"
        f'<text x="{left + 8}" y="{height - bottom - 8}" fill="#1f77b4">cascade (edge top score '
        "under the threshold goes to the cloud)</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# -- the models (I/O) ------------------------------------------------------------------------------


def _manifest(model: Path) -> ModelManifest:
    return ModelManifest.model_validate_json(model.with_suffix(".json").read_text())


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, "L").save(out, "PNG")
    return out.getvalue()


def scores(runtime: Runtime, manifest: ModelManifest, images: np.ndarray) -> np.ndarray:
    """Each image as the agent takes a posted PNG, through ``runtime``: ``[n, classes]`` scores."""
    pre, post = manifest.preprocess, manifest.postprocess
    if not isinstance(pre, ImagePreprocess) or not isinstance(post, ClassificationPostprocess):
        raise SystemExit(f"{manifest.name}: the cascade needs an image classifier's manifest")
    (spec,) = runtime.inputs
    plan = plan_image(pre, spec)
    output = next((o for o in runtime.outputs if o.name == post.output), runtime.outputs[0])
    rows = []
    for pixels in images:
        result = runtime.infer({spec.name: image_to_tensor(_png(pixels), plan)})[output.name]
        values = dequantize(result.reshape(-1), output.quantization)
        rows.append(softmax(values) if post.softmax else values)
    return np.stack(rows)


def measure(edge_model: Path = EDGE, cloud_model: Path = CLOUD) -> tuple[np.ndarray, ...]:
    """``(edge scores, cloud scores, labels)`` over the test split."""
    data = np.load(TESTSET)
    images, labels = data["images"], data["labels"]
    edge_rt = open_litert(edge_model, 1)
    cloud_rt = open_onnxruntime(cloud_model, 1, providers=("CPUExecutionProvider",))
    try:
        edge = scores(edge_rt, _manifest(edge_model), images)
        cloud = scores(cloud_rt, _manifest(cloud_model), images)
    finally:
        edge_rt.close()
        cloud_rt.close()
    return edge, cloud, labels


def _facts(edge_model: Path, cloud_model: Path, n: int) -> list[str]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "?"

    edge_m, cloud_m = _manifest(edge_model), _manifest(cloud_model)
    return [
        f"Edge: `{edge_m.name}` {edge_m.version} (`{edge_model.relative_to(ROOT)}`, sha256 "
        f"`{edge_m.artifacts['cpu'].sha256[:12]}`), LiteRT {version('ai-edge-litert')}.",
        f"Cloud: `{cloud_m.name}` {cloud_m.version} (`{cloud_model.relative_to(ROOT)}`, sha256 "
        f"`{cloud_m.artifacts['onnx'].sha256[:12]}`), ONNX Runtime {version('onnxruntime')}.",
        f"Data: the {n}-image test split (`models/digits/testset.npz`), never seen in training; "
        "each image encoded as PNG and pre-processed by the agent's own code from the manifest.",
        f"Scores are deterministic (no timing involved); produced with Python "
        f"{platform.python_version()} on {platform.machine()}.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "cascade.md")
    parser.add_argument("--svg", type=Path, default=ROOT / "docs" / "cascade.svg")
    args = parser.parse_args(argv)
    edge, cloud, labels = measure()
    edge_alone, cloud_alone = cascade(edge, cloud, labels, [0.0, math.inf])
    grid = cascade(edge, cloud, labels, GRID)
    chosen = choose(grid, cloud_alone.accuracy)
    curve = cascade(edge, cloud, labels, every_threshold(edge))
    facts = _facts(EDGE, CLOUD, len(labels))
    args.markdown.write_text(render_markdown(grid, edge_alone, cloud_alone, chosen, facts))
    args.svg.write_text(render_svg(curve, edge_alone, cloud_alone, chosen))
    print(f"{'threshold':>10} {'offloaded':>10} {'accuracy':>9}")
    for label, p in [("edge", edge_alone), *((f"{p.threshold:g}", p) for p in grid)]:
        print(f"{label:>10} {p.offload_fraction:>10.1%} {p.accuracy:>9.2%}")
    print(f"{'cloud':>10} {cloud_alone.offload_fraction:>10.1%} {cloud_alone.accuracy:>9.2%}")
    print(f"default min_confidence: {chosen.threshold:g} ({chosen.offload_fraction:.1%} offloaded,"
          f" {chosen.accuracy:.2%}); wrote {args.markdown} and {args.svg}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
