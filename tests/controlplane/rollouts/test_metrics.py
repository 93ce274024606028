"""The gate metrics of a wave, measured from a real store."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from controlplane.records import Incoming
from controlplane.rollouts import metrics
from controlplane.rollouts.metrics import measure
from controlplane.store import Store
from protocol.messages import (
    ClassScore,
    CloudAnswer,
    InferenceResult,
    LatencySummary,
    Offload,
    ResultBatch,
    Telemetry,
)

T0 = time.time() - 1000


def result(version: str, score: float) -> InferenceResult:
    return InferenceResult(
        model="digits", model_version=version, artifact_sha256="22" * 32, backend="litert",
        latency_ms=1.0, classes=[ClassScore(index=1, score=score)], created_at=T0 + 10,
    )  # fmt: skip


def telemetry(device: str, at: float, inferences: int, errors: int, p95: float) -> Telemetry:
    return Telemetry(
        device_id=device, sent_at=at, interval_s=10, inferences=inferences, errors=errors,
        latency=LatencySummary(count=inferences, p50_ms=p95 / 2, p95_ms=p95),
    )  # fmt: skip


def deployments(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO rollouts (id, model, version, seq, selector, waves, bake_s, gates, "
        "min_sample, on_halt, device_timeout_s, state, current_wave, created_at, updated_at) "
        "VALUES ('r', 'digits', '2', 2, '{}', '[1.0]', 0, '[]', 0, 'rollback', 60, 'running', 0, "
        "?, ?)",
        [T0, T0],
    )
    rows = [
        ("a", 0, "active", T0 + 5, "1", {"passed": 1, "total": 1, "candidate_ms": 2.0,
         "incumbent_ms": 1.0}, {"samples": 30, "agreement": 0.9, "candidate_p95_ms": 3.0,
         "incumbent_p95_ms": 1.0}),
        ("b", 0, "active", T0 + 5, "1", {"passed": 1, "total": 1, "candidate_ms": 1.0,
         "incumbent_ms": 1.0}, {"samples": 10, "agreement": 0.5}),
        ("c", 1, "pending", None, None, None, None),
    ]  # fmt: skip
    for device, wave, state, activated, previous, smoke, shadow in rows:
        conn.execute(
            "INSERT INTO deployments (rollout_id, device_id, wave, state, attempts, updated_at, "
            "activated_at, previous_version, smoke, shadow) "
            "VALUES ('r', ?, ?, ?, 1, ?, ?, ?, ?, ?)",
            [device, wave, state, T0, activated, previous,
             json.dumps(smoke) if smoke else None, json.dumps(shadow) if shadow else None],
        )  # fmt: skip


async def test_measure_a_wave(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    at = time.time()
    await store.write(
        Incoming("a", at, ResultBatch(device_id="a", results=[result("2", 0.9), result("2", 0.8),
                                                               result("1", 0.3)])),
        Incoming("b", at, ResultBatch(device_id="b", results=[result("2", 0.7)])),
        Incoming("c", at, ResultBatch(device_id="c", results=[result("2", 0.1)])),
        Incoming("a", at, telemetry("a", T0 + 1, 100, 50, 99.0)),  # before it activated
        Incoming("a", at, telemetry("a", T0 + 20, 100, 2, 10.0)),
        Incoming("b", at, telemetry("b", T0 + 20, 300, 6, 20.0)),
        Incoming("c", at, telemetry("c", T0 + 20, 100, 100, 50.0)),  # another wave
    )  # fmt: skip
    await store.transact(deployments)
    few = await store.transact(measure, "r", "digits", "2", 0)
    assert few.values["confidence_shift"] is None, "3 scores against 1: no data, not a shift"
    monkeypatch.setattr(metrics, "KS_MIN_SCORES", 1)
    measured = await store.transact(measure, "r", "digits", "2", 0)
    assert measured.samples == 3 + 40, "new-release results of the wave + shadow samples"
    values = measured.values
    assert values["error_rate"] == pytest.approx(8 / 400)
    assert values["latency_p95_ms"] == pytest.approx((10 * 100 + 20 * 300) / 400)
    assert values["latency_ratio"] == pytest.approx((2.0 + 1.0) / 2), "smoke means, else shadow"
    assert values["agreement"] == pytest.approx((0.9 * 30 + 0.5 * 10) / 40)
    assert values["confidence_shift"] == pytest.approx(1.0), "0.7..0.9 against 0.3: disjoint"
    assert values["offload_rate"] is None


async def test_a_wave_without_data_has_none(store: Store) -> None:
    await store.transact(deployments)
    measured = await store.transact(measure, "r", "digits", "2", 1)
    assert measured.samples == 0
    assert all(v is None for v in measured.values.values()), measured.values


async def test_offload_rate_and_cloud_agreement(store: Store) -> None:
    cloud = CloudAnswer(model="digits-cloud", classes=[ClassScore(index=1, score=0.9)],
                        latency_ms=5.0)  # fmt: skip
    other = CloudAnswer(model="digits-cloud", classes=[ClassScore(index=7, score=0.9)],
                        latency_ms=5.0)  # fmt: skip

    def offloaded(answer: CloudAnswer | None, decision: str = "offloaded") -> InferenceResult:
        r = result("2", 0.5)
        agree = None if answer is None else answer.classes == [ClassScore(index=1, score=0.9)]
        return r.model_copy(
            update={"offload": Offload(decision=decision, cloud=answer, agree=agree)}
        )

    batch = [offloaded(cloud), offloaded(cloud), offloaded(other), offloaded(None, "local")]
    await store.write(Incoming("a", time.time(), ResultBatch(device_id="a", results=batch)))
    await store.transact(deployments)
    values = (await store.transact(measure, "r", "digits", "2", 0)).values
    assert values["offload_rate"] == pytest.approx(3 / 4)
    assert values["cloud_agreement"] == pytest.approx(2 / 3)
