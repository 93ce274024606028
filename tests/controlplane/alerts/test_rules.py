"""Each alert rule, table-driven: a device snapshot and parameters in, firing and value out."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.alerts.rules import (
    RULES,
    Check,
    DeviceSnapshot,
    Expectation,
    Params,
    Recent,
    duration_text,
)

NOW = 1_000_000.0


def device(online: bool = True, last_seen: float = NOW - 5, **fields: Any) -> DeviceSnapshot:
    return DeviceSnapshot(id="cam-1", online=online, last_seen=last_seen, **fields)


def check(rule: str, snap: DeviceSnapshot, **params: Any) -> Check:
    spec = RULES[rule]
    p = spec.defaults
    if params:
        from dataclasses import replace

        p = replace(p, **params)
    return spec.check(snap, p, NOW)


OFFLINE = dict(online=False, last_seen=NOW - 3600)


def gone(seconds: float) -> DeviceSnapshot:
    return device(online=False, last_seen=NOW - seconds)


def p95(ms: Any) -> DeviceSnapshot:
    return device(telemetry={"latency": {"p95_ms": ms}})


def exp(version: str | None, age: float, model: str = "digits-edge", rid: str = "r1") -> Any:
    return (Expectation(model, version, NOW - age, rid),)


CASES: list[tuple[str, str, DeviceSnapshot, dict[str, Any], bool | None, float | None]] = [
    # (id, rule, snapshot, params, firing, value)
    ("offline-online", "device_offline", device(), {}, False, 0.0),
    ("offline-short", "device_offline", gone(300), {}, False, 300.0),
    ("offline-long", "device_offline", gone(601), {}, True, 601.0),
    ("offline-at-threshold", "device_offline", gone(600), {}, True, 600.0),
    ("offline-short-threshold", "device_offline", gone(5), {"threshold": 3.0}, True, 5.0),
    ("offline-not-heard-since-start", "device_offline",
     device(online=None, last_seen=NOW - 3600), {}, None, None),
    ("p95-not-heard-since-start", "latency_p95",
     device(online=None, telemetry={"latency": {"p95_ms": 900.0}}), {}, None, None),
    ("p95-under", "latency_p95", p95(120.0), {}, False, 120.0),
    ("p95-over", "latency_p95", p95(251.0), {}, True, 251.0),
    ("p95-budget", "latency_p95", p95(251.0), {"threshold": 400.0}, False, 251.0),
    ("p95-idle", "latency_p95", device(telemetry={"latency": {"count": 0}}), {}, False, None),
    ("p95-no-telemetry", "latency_p95", device(), {}, False, None),
    ("p95-garbage", "latency_p95", p95("slow"), {}, False, None),
    ("p95-offline", "latency_p95", device(**OFFLINE, telemetry={"latency": {"p95_ms": 900.0}}),
     {}, None, None),
    ("errors-none", "error_rate", device(recent=Recent(100, 0)), {}, False, 0.0),
    ("errors-high", "error_rate", device(recent=Recent(90, 10)), {}, True, 0.1),
    ("errors-at-threshold", "error_rate", device(recent=Recent(95, 5)), {}, False, 0.05),
    ("errors-too-few", "error_rate", device(recent=Recent(5, 5)), {}, False, 0.5),
    ("errors-min-count-lowered", "error_rate", device(recent=Recent(5, 5)), {"min_count": 10},
     True, 0.5),
    ("errors-all-failing", "error_rate", device(recent=Recent(0, 40)), {}, True, 1.0),
    ("errors-idle", "error_rate", device(recent=Recent(0, 0)), {}, False, None),
    ("errors-offline", "error_rate", device(**OFFLINE, recent=Recent(0, 40)), {}, None, None),
    ("outbox-empty", "outbox_stuck", device(telemetry={"outbox_depth": 0}), {}, False, None),
    ("outbox-young", "outbox_stuck", device(telemetry={"outbox_oldest_age_s": 30.0}), {},
     False, 30.0),
    ("outbox-stuck", "outbox_stuck",
     device(telemetry={"outbox_oldest_age_s": 1200.0, "outbox_depth": 5000}), {}, True, 1200.0),
    ("outbox-offline", "outbox_stuck", device(**OFFLINE, telemetry={"outbox_oldest_age_s": 9e3}),
     {}, None, None),
    ("fallback-none", "accelerator_fallback", device(telemetry={"backend": "edgetpu"}), {},
     False, 0.0),
    ("fallback-reason", "accelerator_fallback",
     device(fallback_reason="edgetpu: libedgetpu.so.1 missing", telemetry={"backend": "litert"}),
     {}, True, 1.0),
    ("fallback-telemetry-reason", "accelerator_fallback",
     device(telemetry={"fallback_reason": "edgetpu: USB reset"}), {}, True, 1.0),
    ("fallback-demoted", "accelerator_fallback",
     device(telemetry={"demoted_backends": ["edgetpu", "onnx-gpu"]}), {}, True, 2.0),
    ("fallback-offline", "accelerator_fallback", device(**OFFLINE, fallback_reason="x"), {},
     None, None),
    ("disk-ok", "disk_full",
     device(telemetry={"disk_used_percent": 42.0, "disk_free_bytes": 20_000_000_000}), {},
     False, 42.0),
    ("disk-percent", "disk_full", device(telemetry={"disk_used_percent": 95.5,
                                                    "disk_free_bytes": 9_000_000_000}), {},
     True, 95.5),
    ("disk-bytes", "disk_full", device(telemetry={"disk_used_percent": 50.0,
                                                  "disk_free_bytes": 400_000_000}), {}, True, 50.0),
    ("disk-bytes-only", "disk_full", device(telemetry={"disk_free_bytes": 100}), {}, True, None),
    ("disk-unknown", "disk_full", device(), {}, False, None),
    ("disk-raised", "disk_full", device(telemetry={"disk_used_percent": 95.5}),
     {"threshold": 97.0}, False, 95.5),
    ("disk-offline", "disk_full", device(**OFFLINE, telemetry={"disk_used_percent": 99.0}), {},
     None, None),
    ("thermal-cool", "thermal", device(telemetry={"temperature_c": 55.0, "throttled": False}), {},
     False, 55.0),
    ("thermal-hot", "thermal", device(telemetry={"temperature_c": 85.0}), {}, True, 85.0),
    ("thermal-throttled", "thermal", device(telemetry={"temperature_c": 60.0, "throttled": True}),
     {}, True, 60.0),
    ("thermal-throttled-no-sensor", "thermal", device(telemetry={"throttled": True}), {},
     True, None),
    ("thermal-unknown", "thermal", device(telemetry={"throttled": None}), {}, False, None),
    ("thermal-offline", "thermal", device(**OFFLINE, telemetry={"temperature_c": 99.0}), {},
     None, None),
    ("drift-no-rollout", "model_drift", device(models={"digits-edge": "1"}), {}, False, None),
    ("drift-on-release", "model_drift",
     device(models={"digits-edge": "2"}, expected=exp("2", 9e3)), {}, False, 0.0),
    ("drift-young", "model_drift",
     device(models={"digits-edge": "1"}, expected=exp("2", 60)), {}, False, 60.0),
    ("drift-old", "model_drift",
     device(models={"digits-edge": "1"}, expected=exp("2", 1800)), {}, True, 1800.0),
    ("drift-missing-model", "model_drift",
     device(models={}, expected=exp("2", 4000)), {}, True, 4000.0),
    ("drift-rollback-to-own-model", "model_drift",
     device(models={"digits-edge": "2"}, expected=exp(None, 9e3)), {}, False, None),
    ("drift-one-of-two-models", "model_drift",
     device(models={"a": "1", "b": "1"}, expected=exp("1", 9e3, "a") + exp("2", 9e3, "b", "r2")),
     {}, True, 9000.0),
    ("drift-offline", "model_drift",
     device(**OFFLINE, expected=exp("2", 9e3)), {}, None, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "snap", "params", "firing", "value"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_rule(
    rule: str, snap: DeviceSnapshot, params: dict[str, Any], firing: bool | None,
    value: float | None,
) -> None:  # fmt: skip
    result = check(rule, snap, **params)
    assert result.firing is firing, result.reason
    assert result.value == pytest.approx(value)
    assert result.reason


def test_every_rule_has_a_case() -> None:
    assert {c[1] for c in CASES} == set(RULES)


def test_reasons_name_the_observed_value() -> None:
    assert "251 ms" in check("latency_p95", device(telemetry={"latency": {"p95_ms": 251.0}})).reason
    assert "10 of 100" in check("error_rate", device(recent=Recent(90, 10))).reason
    drift = check(
        "model_drift",
        device(models={"m": "1"}, expected=(Expectation("m", "2", NOW - 3600, "r9"),)),
    )
    assert "m:1" in drift.reason and "r9 says m:2" in drift.reason and "1h" in drift.reason


def test_defaults_are_the_documented_ones() -> None:
    d = {name: spec.defaults for name, spec in RULES.items()}
    assert d["device_offline"] == Params("warning", 0.0, 600.0)
    assert d["latency_p95"].threshold == 250.0
    assert d["error_rate"].threshold == 0.05 and d["error_rate"].min_count == 20
    assert d["outbox_stuck"].threshold == 900.0
    assert d["accelerator_fallback"].threshold is None
    assert d["disk_full"].threshold == 90.0 and d["disk_full"].min_free_bytes == 500_000_000
    assert d["thermal"].threshold == 80.0
    assert d["model_drift"].threshold == 1800.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (42, "42s"), (60, "1m"), (754, "12m34s"), (3600, "1h"), (5400, "1h30m"),
     (86400, "1d"), (90000, "1d1h"), (-5, "0s")],
)  # fmt: skip
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
