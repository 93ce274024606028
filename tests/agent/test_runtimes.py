from __future__ import annotations

import gc
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from agent.errors import ModelLoadError, RuntimeBackendError
from agent.runtimes import (
    BACKENDS,
    Backend,
    candidates,
    fallback_reason,
    open_runtime,
)
from agent.runtimes.litert import load_delegate, open_edgetpu, open_litert, open_tflite_runtime
from agent.runtimes.memory import MemoryRuntime
from agent.runtimes.onnx import choose_providers, open_onnxruntime
from protocol.manifest import TensorSpec

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"
BENCH = ROOT / "models" / "bench"
X = TensorSpec(name="x", shape=[1, 2], datatype="FP32")


# --- choosing a backend (pure) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "priority", "expected"),
    [
        (".tflite", None, ["edgetpu", "litert", "tflite-runtime"]),
        (".TFLITE", None, ["edgetpu", "litert", "tflite-runtime"]),
        (".onnx", None, ["onnxruntime"]),
        (".tflite", ["litert", "onnxruntime", "edgetpu"], ["litert", "edgetpu"]),
        (".onnx", ["edgetpu", "litert", "tflite-runtime", "onnxruntime"], ["onnxruntime"]),
    ],
)
def test_candidates_keep_priority_order_and_file_type(
    suffix: str, priority: list[str] | None, expected: list[str]
) -> None:
    assert candidates(suffix, priority) == expected


@pytest.mark.parametrize(
    ("suffix", "priority", "message"),
    [
        (".tflite", ["litert", "tpu"], "unknown backend 'tpu'; the backends are edgetpu, litert"),
        (".onnx", ["litert"], r"no backend in \[litert\] loads .onnx files \(try onnxruntime\)"),
        (".pt", None, r"no backend in \[\] loads .pt files$"),
    ],
)
def test_candidates_refuse_what_cannot_load(
    suffix: str, priority: list[str] | None, message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message):
        candidates(suffix, priority)


def test_fallback_reason() -> None:
    assert fallback_reason([], "litert") is None
    assert (
        fallback_reason([("edgetpu", "libedgetpu.so.1 not found"), ("litert", "broken")], "x")
        == "edgetpu: libedgetpu.so.1 not found; litert: broken; using x"
    )


def _registry(**outcomes: str | None) -> dict[str, Backend]:
    """Backends that fail with the given reason, or (None) open an in-memory model."""

    def opener(name: str, reason: str | None) -> Backend:
        def open_(path: Path, threads: int) -> MemoryRuntime:
            if reason is not None:
                raise ModelLoadError(reason)
            return MemoryRuntime([X], [X], lambda inputs: dict(inputs), name=name)

        return Backend((".bin",), open_)

    return {name: opener(name, reason) for name, reason in outcomes.items()}


def test_open_runtime_takes_the_first_that_loads_and_warns_for_each_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "m.bin"
    model.write_bytes(b"x")
    registry = _registry(a="no device", b="no library", c=None, d=None)
    with caplog.at_level(logging.WARNING, logger="agent.runtimes"):
        opened = open_runtime(model, ["a", "b", "c", "d"], 1, registry=registry)
    assert opened.runtime.name == "c"
    assert opened.fallback_reason == "a: no device; b: no library; using c"
    assert [r.getMessage() for r in caplog.records] == [
        "backend a cannot serve m.bin: no device",
        "backend b cannot serve m.bin: no library",
    ]
    first = open_runtime(model, ["d", "a"], 1, registry=registry)
    assert (first.runtime.name, first.fallback_reason) == ("d", None)


def test_open_runtime_names_every_attempt_when_none_works(tmp_path: Path) -> None:
    model = tmp_path / "m.bin"
    model.write_bytes(b"x")
    registry = _registry(a="no device", b="no library")
    with pytest.raises(ModelLoadError, match=r"no backend could load .*m.bin: a: no device; b: no"):
        open_runtime(model, ["a", "b"], 1, registry=registry)


def test_open_runtime_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model file not found: .*absent.tflite"):
        open_runtime(tmp_path / "absent.tflite", None, 1)


# --- the in-memory runtime -----------------------------------------------------------------


def test_memory_runtime_refuses_concurrent_use_and_use_after_close() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        started.set()
        release.wait(5)
        return dict(inputs)

    rt = MemoryRuntime([X], [X], slow)
    worker = threading.Thread(target=rt.infer, args=({"x": np.zeros((1, 2), np.float32)},))
    worker.start()
    assert started.wait(5)
    with pytest.raises(RuntimeBackendError, match="used by two threads at once"):
        rt.infer({"x": np.zeros((1, 2), np.float32)})
    release.set()
    worker.join()
    rt.close()
    with pytest.raises(RuntimeBackendError, match="closed"):
        rt.infer({"x": np.zeros((1, 2), np.float32)})


# --- LiteRT --------------------------------------------------------------------------------


def _digit_input(spec: TensorSpec) -> np.ndarray:
    return np.zeros([1 if d == -1 else d for d in spec.shape], np.dtype(spec.datatype.lower()))


def test_litert_describes_and_runs_the_float_model() -> None:
    rt = open_litert(DIGITS / "edge_fp32.tflite", 1)
    try:
        assert rt.name == "litert"
        (x,), (y,) = rt.inputs, rt.outputs
        assert (x.shape[1:], x.datatype, x.quantization) == ([8, 8, 1], "FP32", None)
        assert (y.shape[-1], y.datatype) == (10, "FP32")
        image = np.zeros((1, 8, 8, 1), np.float32)
        out = rt.infer({x.name: image})
        assert set(out) == {y.name}
        assert out[y.name].shape == (1, 10)
        assert abs(float(out[y.name].sum()) - 1.0) < 1e-4  # softmax inside the model
        again = rt.infer({x.name: image})
        assert again[y.name] is not out[y.name]  # outputs are the caller's to keep
        np.testing.assert_array_equal(again[y.name], out[y.name])
    finally:
        rt.close()
    with pytest.raises(RuntimeBackendError, match="closed"):
        rt.infer({x.name: image})


def test_litert_reports_the_int8_model_quantisation() -> None:
    rt = open_litert(DIGITS / "edge_int8.tflite", 2)
    try:
        (x,), (y,) = rt.inputs, rt.outputs
        assert x.datatype in ("INT8", "UINT8") and x.quantization is not None
        assert y.datatype in ("INT8", "UINT8") and y.quantization is not None
        out = rt.infer({x.name: _digit_input(x)})
        assert out[y.name].dtype == np.dtype(y.datatype.lower())
    finally:
        rt.close()


def test_litert_translates_engine_errors() -> None:
    rt = open_litert(DIGITS / "edge_fp32.tflite", 1)
    try:
        (x,) = rt.inputs
        with pytest.raises(RuntimeBackendError, match="litert: inference failed"):
            rt.infer({x.name: np.zeros((1, 8, 8, 1), np.float64)})  # unvalidated wrong dtype
        with pytest.raises(RuntimeBackendError, match="missing input"):
            rt.infer({})
    finally:
        rt.close()


def test_litert_refuses_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="cannot load .*bad.tflite"):
        open_litert(bad, 1)


def test_tflite_runtime_missing_is_a_load_error() -> None:
    try:
        import tflite_runtime  # noqa: F401
    except ImportError:
        with pytest.raises(ModelLoadError, match="tflite-runtime is not installed"):
            open_tflite_runtime(DIGITS / "edge_fp32.tflite", 1)
    else:
        rt = open_tflite_runtime(DIGITS / "edge_fp32.tflite", 1)
        assert rt.name == "tflite-runtime"
        rt.close()


# --- the Edge TPU, with the real load_delegate and no libedgetpu on this machine -----------


def test_edgetpu_missing_library_is_a_load_error_without_unraisable_noise() -> None:
    with pytest.raises(ModelLoadError, match=r"libedgetpu.so.1 not found \(cannot open shared"):
        open_edgetpu(DIGITS / "edge_fp32.tflite", 1)
    gc.collect()  # a half-built Delegate would report "Exception ignored in __del__" here


def test_a_library_that_is_no_delegate_is_refused_cleanly() -> None:
    from ai_edge_litert import interpreter

    with pytest.raises(ModelLoadError, match="libm.so.6 is not a usable delegate"):
        load_delegate(interpreter, "libm.so.6")
    gc.collect()


def test_edgetpu_falls_back_to_litert_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.runtimes"):
        opened = open_runtime(DIGITS / "edge_fp32.tflite", ["edgetpu", "litert"], 1)
    try:
        assert opened.runtime.name == "litert"
        assert opened.fallback_reason is not None
        assert opened.fallback_reason.startswith("edgetpu: libedgetpu.so.1 not found")
        assert opened.fallback_reason.endswith("; using litert")
        assert "backend edgetpu cannot serve edge_fp32.tflite" in caplog.text
    finally:
        opened.runtime.close()
    gc.collect()


def _seen_inside(call: Callable[[], object], native: str, rounds: int = 10) -> int:
    """How often the main thread runs Python while another thread is inside ``native``.

    A profile hook on the calling thread marks when it enters and leaves the native function and
    signals each entry. The switch interval is raised to 1 s, so a thread that holds the GIL is
    not preempted here: if ``native`` held the GIL, the main thread could only wake once the
    other thread had finished its rounds (mark cleared). It sees the mark set, round after round,
    only if ``native`` releases the GIL while it works.
    """
    inside = False
    entered = threading.Semaphore(0)

    def hook(frame: object, event: str, arg: object) -> None:
        nonlocal inside
        if getattr(arg, "__name__", None) == native:
            if event == "c_call":
                inside = True
                entered.release()
            elif event in ("c_return", "c_exception"):
                inside = False

    def calls() -> None:
        sys.setprofile(hook)
        try:
            for _ in range(rounds):
                call()
        finally:
            sys.setprofile(None)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        worker = threading.Thread(target=calls)
        worker.start()
        seen = 0
        for _ in range(rounds):
            assert entered.acquire(timeout=60)
            seen += inside
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    return seen


def test_the_gil_probe_sees_a_call_that_holds_the_gil() -> None:
    assert _seen_inside(lambda: sum(range(300_000)), "sum") == 0  # the builtin keeps the GIL


def test_invoke_releases_the_gil() -> None:
    """The event loop keeps serving while the worker thread is in invoke() (convnet224: ~ms)."""
    rt = open_litert(BENCH / "convnet224.tflite", 1)
    try:
        (x,) = rt.inputs
        image = {x.name: np.zeros([1, *x.shape[1:]], np.dtype(x.datatype.lower()))}
        seen = _seen_inside(lambda: rt.infer(image), "Invoke")
    finally:
        rt.close()
    assert seen >= 5, f"the main thread ran during only {seen} of 10 invokes"


# --- ONNX Runtime --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "available", "chosen"),
    [
        (
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (["CUDAExecutionProvider"], ["CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (
            ["CPUExecutionProvider"],
            ["AzureExecutionProvider", "CPUExecutionProvider"],
            ["CPUExecutionProvider"],
        ),
    ],
)
def test_choose_providers(wanted: list[str], available: list[str], chosen: list[str]) -> None:
    assert choose_providers(wanted, available) == chosen


def test_onnxruntime_describes_and_runs_the_cloud_model() -> None:
    rt = open_onnxruntime(DIGITS / "cloud.onnx", 1)
    try:
        assert rt.name == "onnxruntime" and rt.providers[-1] == "CPUExecutionProvider"
        x, y = rt.inputs[0], rt.outputs[0]
        assert (x.shape, x.datatype) == ([-1, 8, 8, 1], "FP32")
        assert (y.shape, y.datatype) == ([-1, 10], "FP32")
        out = rt.infer({x.name: np.zeros((3, 8, 8, 1), np.float32)})
        assert out[y.name].shape == (3, 10)
        with pytest.raises(RuntimeBackendError, match="onnxruntime: inference failed"):
            rt.infer({x.name: np.zeros((3, 8, 8), np.float32)})
    finally:
        rt.close()


def test_onnxruntime_run_releases_the_gil() -> None:
    rt = open_onnxruntime(DIGITS / "cloud.onnx", 1)
    try:
        batch = {rt.inputs[0].name: np.random.default_rng(0).random((300, 8, 8, 1), np.float32)}
        seen = _seen_inside(lambda: rt.infer(batch), "run")
    finally:
        rt.close()
    assert seen >= 5, f"the main thread ran during only {seen} of 10 runs"


def test_onnxruntime_refuses_a_file_that_is_not_a_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ModelLoadError, match="cannot load .*bad.onnx"):
        open_onnxruntime(bad, 1)


def test_missing_onnxruntime_is_a_clear_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an absent package looks like
    with pytest.raises(ModelLoadError, match=r"onnxruntime is not installed .*edgefleet\[onnx\]"):
        open_onnxruntime(DIGITS / "cloud.onnx", 1)


def test_missing_litert_falls_through_to_the_next_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(ModelLoadError) as info:
        open_runtime(DIGITS / "edge_fp32.tflite", None, 1)
    message = str(info.value)
    assert "edgetpu: ai-edge-litert or tflite-runtime is not installed" in message
    assert "litert: ai-edge-litert is not installed" in message
    assert "tflite-runtime: tflite-runtime is not installed" in message


def test_registry_is_explicit() -> None:
    assert set(BACKENDS) == {"edgetpu", "litert", "tflite-runtime", "onnxruntime"}
