"""Wire messages for control-plane tests (real protocol models, nothing faked)."""

from __future__ import annotations

import time

from protocol.messages import (
    Accelerator,
    ClassScore,
    InferenceResult,
    LatencySummary,
    ModelInfo,
    ResultBatch,
    Status,
    Telemetry,
)

SHA = "ab" * 32


def birth(device_id: str, *, backend: str = "litert", fallback: str | None = None) -> Status:
    return Status(
        device_id=device_id,
        state="online",
        agent_version="0.1.0",
        hardware={"machine": "x86_64", "cpus": 2},
        accelerators=[Accelerator(kind="edgetpu", present=False, detail="libedgetpu.so.1 missing")],
        models=[
            ModelInfo(name="digits-edge", version="1", artifact_sha256=SHA, backend=backend,
                      fallback_reason=fallback)
        ],
        tags={"site": "test"},
    )  # fmt: skip


def will(device_id: str) -> Status:
    return Status(device_id=device_id, state="offline")


def telemetry(device_id: str, *, sent_at: float | None = None, p50: float = 1.0,
              inferences: int = 10, backend: str | None = "litert",
              fallback: str | None = None) -> Telemetry:  # fmt: skip
    return Telemetry(
        device_id=device_id,
        sent_at=time.time() if sent_at is None else sent_at,
        interval_s=1.0,
        inferences=inferences,
        latency=LatencySummary(count=inferences, p50_ms=p50, p95_ms=p50 * 2, p99_ms=p50 * 3),
        backend=backend,
        fallback_reason=fallback,
        outbox_depth=3,
    )


def result(model: str = "digits-edge", *, created_at: float | None = None, label: str = "7",
           score: float = 0.9) -> InferenceResult:  # fmt: skip
    return InferenceResult(
        created_at=time.time() if created_at is None else created_at,
        model=model,
        model_version="1",
        artifact_sha256=SHA,
        backend="litert",
        latency_ms=1.5,
        classes=[ClassScore(index=1, label="1", score=1 - score),
                 ClassScore(index=int(label), label=label, score=score)],
    )  # fmt: skip


def batch(device_id: str, results: list[InferenceResult]) -> ResultBatch:
    return ResultBatch(device_id=device_id, results=results)
