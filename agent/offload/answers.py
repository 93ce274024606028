"""From a cloud reply to a :class:`~protocol.messages.CloudAnswer`, and whether edge and cloud
agree. Pure functions.

With the cloud model's manifest, its classification post-processing applies (labels, top-k,
softmax, the output it names). Without one, a reply whose only output is one score vector is read
as raw classes (indices, no labels, top 5); any other reply is kept as raw outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from agent.postprocess import classify, summarize_outputs
from protocol.manifest import ClassificationPostprocess, ModelManifest
from protocol.messages import ClassScore, CloudAnswer

RAW_TOP_K = 5


def cloud_answer(
    outputs: Mapping[str, np.ndarray],
    *,
    model: str,
    model_version: str | None,
    latency_ms: float,
    answered_at: float,
    manifest: ModelManifest | None = None,
    max_output_values: int = 4096,
) -> CloudAnswer:
    classes = _classes(outputs, manifest)
    return CloudAnswer(
        model=model,
        model_version=model_version,
        classes=classes,
        outputs=None if classes is not None else summarize_outputs(outputs, max_output_values),
        latency_ms=round(latency_ms, 3),
        answered_at=answered_at,
    )


def _classes(
    outputs: Mapping[str, np.ndarray], manifest: ModelManifest | None
) -> list[ClassScore] | None:
    post = manifest.postprocess if manifest is not None else None
    if manifest is not None and isinstance(post, ClassificationPostprocess):
        name = post.output or manifest.outputs[0].name
        array = outputs.get(name)
        if array is None:
            return None
        spec = next((s for s in manifest.outputs if s.name == name), None)
        return classify(
            array,
            spec.quantization if spec is not None else None,
            k=post.top_k,
            apply_softmax=post.softmax,
            labels=manifest.labels,
        )
    if len(outputs) != 1:
        return None
    (array,) = outputs.values()
    if array.dtype.kind not in "fiu" or array.size < 2:
        return None
    return classify(array, None, k=RAW_TOP_K, apply_softmax=False)


def agree(local: Sequence[ClassScore] | None, cloud: Sequence[ClassScore] | None) -> bool | None:
    """Whether both give the same top class: by label when both have one, else by index.
    None when either is not a classification."""
    if not local or not cloud:
        return None
    a = max(local, key=lambda c: c.score)
    b = max(cloud, key=lambda c: c.score)
    if a.label is not None and b.label is not None:
        return a.label == b.label
    return a.index == b.index


def top_score(classes: Sequence[ClassScore] | None) -> float | None:
    return max(c.score for c in classes) if classes else None
