"""The served model: a runtime backend with its manifest, pre- and post-processing.

:class:`ServedModel` is what the local API and the simulator call. It loads a model file on the
first backend of a priority list that works (:mod:`agent.runtimes`), checks the manifest against
the tensors the file declares, and runs every inference (pre-processing, ``invoke``,
post-processing) on ONE worker thread of its own: the event loop never blocks, and the interpreter,
which is not thread-safe, is never used by two requests at once. A file without a manifest is
served as it is: named after the file, version "0", raw tensors in and out, and images accepted
when its input looks like one.

Loaded with ``supervision`` (the agent's ``[supervisor]`` settings), an accelerator backend runs in
a supervised worker process instead (:mod:`agent.supervisor`): then ``backend`` and
``fallback_reason`` follow what the supervisor does (a demotion, a promotion), each result names
the backend that actually answered it, and the model has two threads (the worker holds the next
request while it runs one; an in-process fallback still takes one at a time).

A model may have a **fallback artifact** (``fallback``: the CPU build of a model compiled for the
Edge TPU, :mod:`agent.supervisor.artifacts`): the non-accelerator backends open it instead of the
model's file, and each result's ``artifact_sha256`` is the hash of the file that answered it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import AgentError, InputError, ModelLoadError, RuntimeBackendError
from agent.postprocess import DEFAULT_MAX_OUTPUT_VALUES, classify, summarize_outputs
from agent.preprocess import (
    DEFAULT_MAX_PIXELS,
    ImagePlan,
    default_image_preprocess,
    fmt_shape,
    image_to_tensor,
    plan_image,
    validate_inputs,
)
from agent.runtimes import open_runtime
from agent.runtimes.base import Runtime
from agent.supervisor.artifacts import opens_primary
from agent.supervisor.config import SupervisorConfig
from agent.supervisor.loading import open_supervised
from agent.supervisor.supervised import SupervisedRuntime
from protocol.manifest import (
    ClassificationPostprocess,
    ImagePreprocess,
    ModelManifest,
    TensorSpec,
)
from protocol.messages import InferenceResult

PLATFORMS = {".tflite": "tflite", ".onnx": "onnx"}
IN_PROCESS = SupervisorConfig(isolation="thread")
"""The chain walk without supervision (every backend in this process)."""


@dataclass(frozen=True)
class InferenceOutput:
    outputs: dict[str, np.ndarray]
    """The raw outputs, as the model gives them (not dequantised)."""
    result: InferenceResult
    """What the outbox keeps: model, version, artifact hash, backend, latency, classes/outputs."""
    inputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    """The tensors the model ran on (after pre-processing): what an offload sends the cloud."""


@dataclass(frozen=True)
class _Classifier:
    output: TensorSpec
    post: ClassificationPostprocess
    labels: Sequence[str]


class ServedModel:
    """One model served on one backend, inferring on a dedicated worker thread."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        manifest: ModelManifest,
        artifact_sha256: str,
        platform: str,
        fallback_reason: str | None = None,
        max_output_values: int = DEFAULT_MAX_OUTPUT_VALUES,
        image_plan: ImagePlan | None = None,
        fallback_path: Path | None = None,
        fallback_sha256: str | None = None,
    ) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.version = manifest.version
        self.primary_sha256 = artifact_sha256
        """SHA-256 of the model's own file (what a deployment installed)."""
        self.fallback_path = fallback_path
        self.fallback_sha256 = fallback_sha256
        """SHA-256 of the fallback artifact the CPU backends run, or None when there is none."""
        self.platform = platform
        self._fallback_reason = fallback_reason
        self.supervised = runtime if isinstance(runtime, SupervisedRuntime) else None
        """The supervisor, when the backend runs in a worker process (None: in this process)."""
        self.inputs: list[TensorSpec] = runtime.inputs
        self.outputs: list[TensorSpec] = runtime.outputs
        self._runtime = runtime
        self._max_output_values = max_output_values
        self._image_plan = image_plan
        self._classifier = _classifier(manifest, runtime.outputs)
        # One thread: the interpreter is never used by two requests at once. A supervised worker
        # takes the next request while it runs one, so it gets a thread per request it holds.
        threads = self.supervised.concurrency if self.supervised is not None else 1
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=f"infer-{self.name}")
        self._closed = False
        self.pending = 0
        """Inferences submitted and not finished: the backlog the offload policy weighs."""

    @classmethod
    def load(
        cls,
        path: Path | str,
        *,
        manifest: ModelManifest | None = None,
        priority: Sequence[str] | None = None,
        threads: int = 1,
        max_output_values: int = DEFAULT_MAX_OUTPUT_VALUES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        supervision: SupervisorConfig | None = None,
        fallback: Path | str | None = None,
    ) -> ServedModel:
        """Load ``path`` on the first backend of ``priority`` that works (default: by file type).

        With ``supervision``, accelerators run in supervised worker processes (see
        :mod:`agent.supervisor`); without it, every backend runs in this process. With a
        ``fallback`` artifact, the non-accelerator backends open that file instead of ``path``.
        Raises ModelLoadError naming the problem: no backend, a file that does not load, or a
        manifest that does not match the model's tensors.
        """
        path = Path(path)
        fallback = Path(fallback) if fallback is not None else None
        if fallback is not None:
            opened = open_supervised(
                path, priority, threads, supervision or IN_PROCESS, fallback=fallback
            )
        elif supervision is not None:
            opened = open_supervised(path, priority, threads, supervision)
        else:
            opened = open_runtime(path, priority, threads)
        try:
            return cls.from_runtime(
                opened.runtime,
                manifest=manifest,
                name=path.stem,
                artifact_sha256=file_sha256(path),
                platform=PLATFORMS.get(path.suffix.lower(), path.suffix.lstrip(".")),
                fallback_reason=opened.fallback_reason,
                max_output_values=max_output_values,
                max_pixels=max_pixels,
                fallback_path=fallback,
                fallback_sha256=file_sha256(fallback) if fallback is not None else None,
            )
        except BaseException:
            opened.runtime.close()
            raise

    @classmethod
    def from_runtime(
        cls,
        runtime: Runtime,
        *,
        manifest: ModelManifest | None,
        name: str,
        artifact_sha256: str,
        platform: str,
        fallback_reason: str | None = None,
        max_output_values: int = DEFAULT_MAX_OUTPUT_VALUES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        fallback_path: Path | None = None,
        fallback_sha256: str | None = None,
    ) -> ServedModel:
        """Serve an opened runtime; without a manifest, as raw tensors named ``name``.
        ``artifact_sha256`` is the hash of the model's file, ``fallback_sha256`` that of its
        fallback artifact (opened by the non-accelerator backends), if it has one."""
        if manifest is None:
            manifest = ModelManifest(
                name=model_name(name), version="0", inputs=runtime.inputs, outputs=runtime.outputs
            )
        else:
            problems = spec_mismatches("input", manifest.inputs, runtime.inputs)
            problems += spec_mismatches("output", manifest.outputs, runtime.outputs)
            if problems:
                raise ModelLoadError(
                    f"model {manifest.name!r} does not match its manifest: " + "; ".join(problems)
                )
        try:
            plan = _image_plan(manifest, runtime.inputs, max_pixels)
        except ValueError as exc:
            raise ModelLoadError(f"model {manifest.name!r}: {exc}") from None
        return cls(
            runtime,
            manifest=manifest,
            artifact_sha256=artifact_sha256,
            platform=platform,
            fallback_reason=fallback_reason,
            max_output_values=max_output_values,
            image_plan=plan,
            fallback_path=fallback_path,
            fallback_sha256=fallback_sha256,
        )

    @property
    def backend(self) -> str:
        """The backend serving now (a supervised model's changes on demotion and promotion)."""
        return self._runtime.name

    @property
    def artifact_sha256(self) -> str:
        """SHA-256 of the file serving now: the fallback artifact's while a CPU backend serves."""
        return self.artifact_of(self.backend)

    def artifact_of(self, backend: str) -> str:
        """SHA-256 of the file ``backend`` runs (see :mod:`agent.supervisor.artifacts`)."""
        if self.fallback_sha256 is not None and not opens_primary(backend):
            return self.fallback_sha256
        return self.primary_sha256

    @property
    def fallback_reason(self) -> str | None:
        """Why preferred backends are not serving (skipped at load, restarting, demoted)."""
        if self.supervised is not None:
            return self.supervised.fallback_reason
        return self._fallback_reason

    @property
    def demoted_backends(self) -> list[str]:
        """Backends the supervisor demoted after repeated crashes or hangs."""
        return self.supervised.demoted if self.supervised is not None else []

    @property
    def backend_restarts(self) -> int:
        """Worker starts after a failure (restarts, retries of a demoted backend) since this model
        was loaded."""
        return self.supervised.restarts if self.supervised is not None else 0

    @property
    def accepts_images(self) -> bool:
        """Whether :meth:`infer_image` can work (an image manifest, or an image-like input)."""
        return self._image_plan is not None

    def metadata(self) -> dict[str, Any]:
        """The Open Inference Protocol model metadata."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.platform,
            "inputs": [_tensor_metadata(spec) for spec in self.inputs],
            "outputs": [_tensor_metadata(spec) for spec in self.outputs],
        }

    async def infer(
        self, inputs: dict[str, np.ndarray], *, request_id: str | None = None
    ) -> InferenceOutput:
        """Infer on a client's tensors (exact names, dtypes and shapes, else InputError)."""
        return await self._submit(self._run_tensors, inputs, request_id)

    async def infer_image(self, data: bytes, *, request_id: str | None = None) -> InferenceOutput:
        """Infer on a JPEG or PNG image, pre-processed as the manifest says."""
        if self._image_plan is None:
            described = ", ".join(
                f"{s.name!r} {s.datatype} {fmt_shape(s.shape)}" for s in self.inputs
            )
            raise InputError(
                f"model {self.name!r} takes raw tensors ({described}), not images; "
                "send tensors to its infer endpoint"
            )
        return await self._submit(self._run_image, data, request_id)

    def close(self) -> None:
        """Wait for the inference in progress, then release the backend. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self._runtime.close()

    # --- on the worker thread ---------------------------------------------------------------

    async def _submit(self, fn: Any, payload: Any, request_id: str | None) -> InferenceOutput:
        if self._closed:
            raise RuntimeBackendError(f"model {self.name!r} is closed")
        loop = asyncio.get_running_loop()
        self.pending += 1
        try:
            result: InferenceOutput = await loop.run_in_executor(
                self._executor, fn, payload, request_id
            )
        finally:
            self.pending -= 1
        return result

    def _run_tensors(
        self, inputs: Mapping[str, np.ndarray], request_id: str | None
    ) -> InferenceOutput:
        start = time.perf_counter()
        validate_inputs(self.inputs, inputs)
        return self._finish(self._invoke(inputs), start, request_id, inputs)

    def _run_image(self, data: bytes, request_id: str | None) -> InferenceOutput:
        start = time.perf_counter()
        plan = self._image_plan
        assert plan is not None  # checked by infer_image
        tensor = image_to_tensor(data, plan)
        feed = {plan.input.name: tensor}
        return self._finish(self._invoke(feed), start, request_id, feed)

    def _invoke(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            return self._runtime.infer(inputs)
        except AgentError:
            raise
        except Exception as exc:  # a backend that let a foreign exception through
            raise RuntimeBackendError(f"{self.backend}: inference failed: {exc}") from None

    def _finish(
        self,
        outputs: dict[str, np.ndarray],
        start: float,
        request_id: str | None,
        inputs: Mapping[str, np.ndarray] | None = None,
    ) -> InferenceOutput:
        classes = None
        kept = None
        c = self._classifier
        if c is not None:
            classes = classify(
                outputs[c.output.name],
                c.output.quantization,
                k=c.post.top_k,
                apply_softmax=c.post.softmax,
                labels=c.labels,
            )
        if classes is None:
            kept = summarize_outputs(outputs, self._max_output_values)
        latency_ms = (time.perf_counter() - start) * 1000.0
        supervised = self.supervised
        backend = supervised.answered_by if supervised is not None else self._runtime.name
        result = InferenceResult(
            model=self.name,
            model_version=self.version,
            artifact_sha256=self.artifact_of(backend),
            backend=backend,
            latency_ms=round(latency_ms, 3),
            request_id=request_id,
            classes=classes,
            outputs=kept,
        )
        return InferenceOutput(outputs=outputs, result=result, inputs=inputs or {})


# --- decisions at load ----------------------------------------------------------------------


def model_name(stem: str) -> str:
    """A valid model name from a file stem: other characters become ``_``, at most 64."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:64] or "model"


def spec_mismatches(
    kind: str, declared: Sequence[TensorSpec], actual: Sequence[TensorSpec]
) -> list[str]:
    """How a manifest's tensors differ from the model's (empty when they agree)."""
    problems: list[str] = []
    found = {spec.name: spec for spec in actual}
    for want in declared:
        have = found.get(want.name)
        if have is None:
            names = ", ".join(repr(s.name) for s in actual)
            problems.append(f"{kind} {want.name!r} is not in the model (it has {names})")
            continue
        if want.datatype != have.datatype:
            problems.append(
                f"{kind} {want.name!r}: manifest says {want.datatype}, model has {have.datatype}"
            )
        if len(want.shape) != len(have.shape) or any(
            -1 not in (w, h) and w != h for w, h in zip(want.shape, have.shape, strict=False)
        ):
            problems.append(
                f"{kind} {want.name!r}: manifest says shape {fmt_shape(want.shape)}, "
                f"model has {fmt_shape(have.shape)}"
            )
        wq, hq = want.quantization, have.quantization
        if wq is not None and (
            hq is None
            or wq.zero_point != hq.zero_point
            or not np.isclose(wq.scale, hq.scale, rtol=1e-5, atol=0.0)
        ):
            problems.append(
                f"{kind} {want.name!r}: manifest says quantisation {_quant(wq)}, "
                f"model has {_quant(hq)}"
            )
    declared_names = {spec.name for spec in declared}
    problems += [
        f"model {kind} {spec.name!r} is not in the manifest"
        for spec in actual
        if spec.name not in declared_names
    ]
    return problems


def _quant(q: Any) -> str:
    return "none" if q is None else f"scale {q.scale:g} zero point {q.zero_point}"


def _image_plan(
    manifest: ModelManifest, inputs: Sequence[TensorSpec], max_pixels: int
) -> ImagePlan | None:
    pre = manifest.preprocess
    if isinstance(pre, ImagePreprocess):
        if len(inputs) != 1:
            raise ValueError(
                f"image pre-processing needs a model with one input, not {len(inputs)}"
            )
        return plan_image(pre, inputs[0], max_pixels=max_pixels)
    guessed = default_image_preprocess(inputs[0]) if len(inputs) == 1 else None
    return plan_image(guessed, inputs[0], max_pixels=max_pixels) if guessed else None


def _classifier(manifest: ModelManifest, outputs: Sequence[TensorSpec]) -> _Classifier | None:
    post = manifest.postprocess
    if not isinstance(post, ClassificationPostprocess):
        return None
    wanted = post.output or manifest.outputs[0].name
    spec = next((s for s in outputs if s.name == wanted), None)
    if spec is None:  # unreachable after spec_mismatches, kept as a clear error
        raise ModelLoadError(f"model {manifest.name!r}: classification output {wanted!r} not found")
    return _Classifier(output=spec, post=post, labels=manifest.labels)


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest()
