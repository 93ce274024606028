"""A small fleet for the console's in-process tests, written through the store as real wire
messages (births, telemetry, result batches with offload decisions and cloud answers)."""

from __future__ import annotations

import time

from controlplane.records import Incoming
from controlplane.store import Store
from protocol.messages import (
    Accelerator,
    ClassScore,
    CloudAnswer,
    InferenceResult,
    LatencySummary,
    ModelInfo,
    Offload,
    ResultBatch,
    Status,
    Telemetry,
)

SHA = "ab" * 32
MODEL = "digits-edge"


def birth(
    device_id: str, *, version: str = "1.0.0", fallback: str | None = None,
    tags: dict[str, str] | None = None, edgetpu: bool = False,
) -> Status:  # fmt: skip
    return Status(
        device_id=device_id, state="online", agent_version="0.1.0",
        hardware={"machine": "x86_64"},
        accelerators=[Accelerator(kind="edgetpu", present=edgetpu, detail=None if edgetpu
                                  else "libedgetpu.so.1 missing")],
        models=[ModelInfo(name=MODEL, version=version, artifact_sha256=SHA,
                          backend="edgetpu" if edgetpu else "litert", fallback_reason=fallback)],
        tags=tags if tags is not None else {"site": "lab"},
    )  # fmt: skip


def telemetry(
    device_id: str, sent_at: float, *, p95: float = 4.0, errors: int = 0, outbox: int = 0,
    backend: str = "litert", fallback: str | None = None, demoted: list[str] | None = None,
    restarts: int = 0,
) -> Telemetry:  # fmt: skip
    return Telemetry(
        device_id=device_id, sent_at=sent_at, interval_s=5.0, inferences=50, errors=errors,
        latency=LatencySummary(count=50, p50_ms=p95 / 2, p95_ms=p95, p99_ms=p95 * 1.5),
        backend=backend, fallback_reason=fallback, outbox_depth=outbox, cpu_percent=20.0,
        memory_rss_bytes=90 * 2**20, temperature_c=50.0, demoted_backends=demoted or [],
        backend_restarts_total=restarts,
    )  # fmt: skip


def result(
    created_at: float, label: int, score: float, *, version: str = "1.0.0",
    offload: str | None = "local", cloud: int | None = None,
) -> InferenceResult:  # fmt: skip
    answer = None
    if cloud is not None:
        answer = CloudAnswer(model="digits-cloud", classes=[ClassScore(index=cloud,
                             label=str(cloud), score=0.99)], latency_ms=8.0)  # fmt: skip
    return InferenceResult(
        created_at=created_at, model=MODEL, model_version=version, artifact_sha256=SHA,
        backend="litert", latency_ms=2.0,
        classes=[ClassScore(index=label, label=str(label), score=score)],
        offload=None if offload is None else Offload(
            decision=offload, cloud=answer, agree=None if cloud is None else cloud == label
        ),
    )  # fmt: skip


DEVICES = ("cam-000", "cam-001", "cam-002", "cam-003")
"""cam-000 healthy; cam-001 on a fallback backend (degraded); cam-002 with errors and a full
outbox (degraded, needs attention); cam-003 sent its will (offline)."""


async def seed(store: Store, now: float | None = None) -> None:
    now = time.time() if now is None else now
    messages: list[Incoming] = []

    def add(message: Status | Telemetry | ResultBatch, at: float = now) -> None:
        messages.append(Incoming(message.device_id, at, message))

    add(birth("cam-000", tags={"site": "lab", "row": "a"}))
    add(birth("cam-001", fallback="edgetpu: libedgetpu.so.1 missing", tags={"site": "plant"}))
    add(birth("cam-002", version="2.0.0"))
    add(birth("cam-003"))
    for k in range(30):  # five minutes of telemetry every ten seconds
        at = now - 300 + k * 10
        add(telemetry("cam-000", at, p95=4.0 + k % 3), at)
        add(telemetry("cam-001", at, p95=9.0, fallback="edgetpu: libedgetpu.so.1 missing",
                      demoted=["edgetpu"] if k >= 20 else None, restarts=1 if k >= 20 else 0),
            at)  # fmt: skip
        add(telemetry("cam-002", at, errors=3, outbox=5000), at)
    results = [
        result(now - 100 + i, label=i % 10, score=0.95 if i % 4 else 0.4,
               offload="offloaded" if i % 4 == 0 else "local",
               cloud=(i % 10 if i % 8 else (i + 1) % 10) if i % 4 == 0 else None)
        for i in range(40)
    ]  # fmt: skip
    add(ResultBatch(device_id="cam-000", results=results[:20]))
    add(ResultBatch(device_id="cam-002", results=[
        result(r.created_at, int(r.classes[0].index), r.classes[0].score, version="2.0.0",
               offload=None) for r in results[20:]
    ]))  # fmt: skip
    await store.write(*messages)
    await store.write(Incoming("cam-003", now, Status(device_id="cam-003", state="offline")))
