"""A release as a model of a Triton model repository: the ``config.pbtxt`` text (pure).

Past one machine the cloud tier is Triton (or KServe) on Kubernetes (deploy/k8s/). A registry
release with an ``onnx`` artifact becomes ``REPO/NAME/config.pbtxt`` plus
``REPO/NAME/<seq>/model.onnx`` (``edgefleet models export-triton``, in
:mod:`controlplane.fleet.triton_export`). Triton's version directories are integers, so the
release's ``seq`` (which grows with every push of a name) is the version; the release's own
version string is written in a comment.

With ``max_batch_size > 0`` Triton takes the first dimension of every input and output as the
batch and the ``dims`` leave it out, so batching needs an ONNX model whose first dimension is
dynamic everywhere; :func:`plan_batching` checks that against the tensors ONNX Runtime reports
for the artifact, and picks batching by default when the model allows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from protocol.manifest import ClassificationPostprocess, TensorSpec
from protocol.release import Release

TRITON_DATATYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
}
"""Open Inference Protocol datatypes to Triton's ``DataType`` enum (model_config.proto)."""

PLATFORM = "onnxruntime_onnx"
LABELS_FILE = "labels.txt"
DEFAULT_MAX_BATCH_SIZE = 32
"""As the offload server's ``--max-batch`` default, so the two tiers batch alike."""

InstanceKind = Literal["auto", "gpu", "cpu"]
_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}


class TritonExportError(ValueError):
    """A release that cannot become a Triton model as asked; the message names why."""


@dataclass(frozen=True)
class TritonOptions:
    """How Triton serves the model. The defaults match the offload server's."""

    max_batch_size: int | None = None
    """None: :data:`DEFAULT_MAX_BATCH_SIZE` when the model batches, else 0 (no batching)."""
    max_queue_delay_us: int = 2000
    """How long the dynamic batcher holds a request to fill a batch (the server's 2 ms)."""
    max_queue_size: int = 256
    """Requests queued at most (the server's ``--max-queue``); past it Triton answers
    "unavailable" (HTTP 503), which the agent's client retries. 0: unbounded."""
    preferred_batch_sizes: tuple[int, ...] = ()
    instances: int = 1
    """Model instances (execution copies) per device."""
    kind: InstanceKind = "auto"
    """Where they run: ``auto`` (a GPU when Triton has one), ``gpu`` or ``cpu``."""


def batch_blocker(tensors: Sequence[TensorSpec]) -> str | None:
    """Why the tensors cannot batch along their first dimension, or None when they can."""
    for spec in tensors:
        if not spec.shape:
            return f"tensor {spec.name!r} is a scalar"
        if spec.shape[0] != -1:
            return f"tensor {spec.name!r} has a fixed first dimension ({spec.shape[0]})"
    return None


def plan_batching(requested: int | None, tensors: Sequence[TensorSpec]) -> int:
    """The ``max_batch_size`` to write: ``requested``, or the default when None (0 for a model
    that cannot batch); TritonExportError for batching asked of a model that cannot."""
    blocker = batch_blocker(tensors)
    if requested is None:
        return 0 if blocker else DEFAULT_MAX_BATCH_SIZE
    if requested < 0:
        raise TritonExportError(f"max_batch_size must be 0 or more, got {requested}")
    if requested > 0 and blocker:
        raise TritonExportError(
            f"the model cannot batch ({blocker}): export it with --max-batch-size 0, or export "
            "the ONNX model with a dynamic first dimension"
        )
    return requested


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor(spec: TensorSpec, batched: bool, label_file: bool) -> list[str]:
    dims = spec.shape[1:] if batched else spec.shape
    lines = [
        "  {",
        f"    name: {_quote(spec.name)}",
        f"    data_type: {TRITON_DATATYPES[spec.datatype]}",
    ]
    if dims:
        lines.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    else:  # a [batch] tensor: Triton wants one dim, reshaped away
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    if label_file:
        lines.append(f"    label_filename: {_quote(LABELS_FILE)}")
    lines.append("  }")
    return lines


def _block(key: str, items: list[list[str]]) -> list[str]:
    lines = [f"{key} ["]
    for i, item in enumerate(items):
        lines += item[:-1] + [item[-1] + ("," if i < len(items) - 1 else "")]
    return [*lines, "]"]


def labelled_output(release: Release, outputs: Sequence[TensorSpec]) -> str | None:
    """The output that Triton's classification extension labels: a classifier's scores, when
    the release has labels."""
    post = release.postprocess
    if not release.labels or not isinstance(post, ClassificationPostprocess) or not outputs:
        return None
    return post.output if any(o.name == post.output for o in outputs) else outputs[0].name


def config_pbtxt(
    release: Release,
    options: TritonOptions = TritonOptions(),
    *,
    model_name: str | None = None,
    inputs: Sequence[TensorSpec] | None = None,
    outputs: Sequence[TensorSpec] | None = None,
) -> str:
    """``config.pbtxt`` for ``release`` served by Triton's ONNX Runtime backend.

    ``inputs`` and ``outputs`` are the ONNX artifact's tensors as ONNX Runtime reports them (the
    release's, from its manifest, when not given: those may say 1 where the model says -1).
    """
    if "onnx" not in release.artifacts:
        targets = ", ".join(sorted(release.artifacts))
        raise TritonExportError(
            f"release {release.name} {release.version} has no onnx artifact (it has: {targets}); "
            "push one with --artifact onnx=model.onnx"
        )
    ins = list(release.inputs if inputs is None else inputs)
    outs = list(release.outputs if outputs is None else outputs)
    unknown = [t for t in (*ins, *outs) if t.datatype not in TRITON_DATATYPES]
    if unknown:
        raise TritonExportError(f"tensor {unknown[0].name!r}: Triton has no {unknown[0].datatype}")
    if options.instances < 1:
        raise TritonExportError(f"instances must be 1 or more, got {options.instances}")
    if options.max_queue_delay_us < 0 or options.max_queue_size < 0:
        raise TritonExportError("max_queue_delay_us and max_queue_size must be 0 or more")
    max_batch = plan_batching(options.max_batch_size, [*ins, *outs])
    preferred = [b for b in options.preferred_batch_sizes if b > 0]
    if max_batch == 0 and preferred:
        raise TritonExportError("preferred batch sizes need batching (max_batch_size > 0)")
    too_big = [b for b in preferred if b > max_batch]
    if too_big:
        raise TritonExportError(
            f"preferred batch size {too_big[0]} is over max_batch_size {max_batch}"
        )
    batched = max_batch > 0
    labelled = labelled_output(release, outs)
    artifact = release.artifacts["onnx"]
    lines = [
        f"# edgefleet release {release.name} {release.version} (seq {release.seq}),",
        f"# onnx artifact sha256 {artifact.sha256},",
        "# written by `edgefleet models export-triton`.",
        f"name: {_quote(model_name or release.name)}",
        f"platform: {_quote(PLATFORM)}",
        f"max_batch_size: {max_batch}",
        *_block("input", [_tensor(t, batched, False) for t in ins]),
        *_block("output", [_tensor(t, batched, t.name == labelled) for t in outs]),
        *_block(
            "instance_group",
            [
                [
                    "  {",
                    f"    count: {options.instances}",
                    f"    kind: {_KINDS[options.kind]}",
                    "  }",
                ]
            ],
        ),
    ]
    if batched:
        lines += ["dynamic_batching {"]
        if preferred:
            lines.append(f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]")
        lines.append(f"  max_queue_delay_microseconds: {options.max_queue_delay_us}")
        if options.max_queue_size:
            lines += [
                "  default_queue_policy {",
                f"    max_queue_size: {options.max_queue_size}",
                "  }",
            ]
        lines.append("}")
    return "\n".join(lines) + "\n"


def labels_text(release: Release) -> str | None:
    """The ``labels.txt`` beside ``config.pbtxt`` (one label per line), or None without labels."""
    return "".join(f"{label}\n" for label in release.labels) if release.labels else None
