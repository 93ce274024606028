from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest

from controlplane.rollouts.gates import Verdict, WaveMetrics, evaluate, ks_distance, p95
from controlplane.rollouts.spec import DEFAULT_GATES, Gate, parse_gate

NOW = 10_000.0
BAKE = 600.0
MIN_SAMPLE = 50


@dataclass(frozen=True)
class Case:
    """One row of the evaluate table: a wave's state and the verdict it must give."""

    devices: int = 10
    finished: int = 10
    failed: int = 0
    samples: int = 100
    values: Mapping[str, float | None] = field(default_factory=dict)
    gates: tuple[Gate, ...] = DEFAULT_GATES
    baked_for: float | None = BAKE  # seconds since the last device finished; None: not started
    bake_s: float = BAKE
    decision: str = "pass"
    reason: str = ""  # must appear in the verdict's reason
    gate: str | None = None
    value: float | None = None


GOOD = {
    "error_rate": 0.01,
    "latency_ratio": 1.1,
    "agreement": 0.97,
    "confidence_shift": 0.05,
    "latency_p95_ms": 20.0,
}


def g(*texts: str) -> tuple[Gate, ...]:
    return tuple(parse_gate(t) for t in texts)


CASES = [
    # 1. an empty wave
    pytest.param(
        Case(devices=0, finished=0, samples=0, baked_for=None, reason="no devices"),
        id="empty-wave-passes-at-once",
    ),
    # 2. failures that break failure_rate whatever the rest do: halt at once
    pytest.param(
        Case(
            finished=3,
            failed=2,
            decision="halt",
            reason="failure_rate 0.2 > 0.1 (2 of 10 devices failed, 7 still deploying)",
            gate="failure_rate<=0.1",
            value=0.2,
        ),
        id="failures-halt-while-others-deploy",
    ),
    pytest.param(
        Case(finished=5, failed=1, decision="wait", reason="5 of 10 devices still deploying"),
        id="failures-exactly-at-threshold-wait",
    ),
    pytest.param(
        Case(
            finished=5,
            failed=1,
            gates=g("failure_rate<0.1"),
            decision="halt",
            reason="failure_rate 0.1 >= 0.1 (1 of 10 devices failed, 5 still deploying)",
            gate="failure_rate<0.1",
            value=0.1,
        ),
        id="failures-at-strict-threshold-halt",
    ),
    pytest.param(
        Case(
            failed=2,
            samples=0,
            baked_for=0.0,
            decision="halt",
            reason="failure_rate 0.2 > 0.1 (2 of 10 devices failed)",
            value=0.2,
        ),
        id="failures-halt-before-bake-and-sample",
    ),
    pytest.param(
        Case(failed=2, values={"failure_rate": 0.0}, decision="halt", value=0.2),
        id="failure-rate-comes-from-the-counts",
    ),
    pytest.param(
        Case(finished=3, failed=2, gates=g("error_rate<0.1"), decision="wait"),
        id="no-failure-gate-no-early-halt",
    ),
    pytest.param(
        # worst case (all 7 deploying fail) would break it, best case holds: keep going
        Case(finished=3, failed=0, gates=g("failure_rate<=0.5"), decision="wait"),
        id="failures-could-still-hold",
    ),
    pytest.param(
        # an odd gate, but the rule is general: halt only when no outcome of the rest can mend it
        Case(finished=3, failed=0, gates=g("failure_rate>0.5"), decision="wait"),
        id="lower-bound-failure-gate-waits",
    ),
    # 3. waiting: deploying, bake, minimum sample
    pytest.param(
        Case(finished=9, decision="wait", reason="1 of 10 devices still deploying"),
        id="deploying-waits",
    ),
    pytest.param(
        Case(baked_for=None, decision="wait", reason="bake not started"),
        id="bake-not-started-waits",
    ),
    pytest.param(
        Case(values=GOOD, baked_for=BAKE - 1, decision="wait", reason="baking, 1s left"),
        id="bake-one-second-short-waits",
    ),
    pytest.param(
        Case(values=GOOD, baked_for=0.0, decision="wait", reason="baking, 10m00s left"),
        id="bake-just-started-waits",
    ),
    pytest.param(Case(values=GOOD, baked_for=BAKE), id="bake-exactly-passed-passes"),
    pytest.param(Case(values=GOOD, baked_for=0.0, bake_s=0.0), id="zero-bake-passes-at-once"),
    pytest.param(
        Case(values=GOOD, samples=MIN_SAMPLE - 1, decision="wait", reason="49 of 50 samples"),
        id="one-sample-short-waits",
    ),
    pytest.param(Case(values=GOOD, samples=MIN_SAMPLE), id="exactly-min-sample-passes"),
    pytest.param(
        Case(
            values={"error_rate": 0.9},
            samples=MIN_SAMPLE - 1,
            decision="wait",
            reason="49 of 50 samples",
        ),
        id="broken-gate-waits-for-min-sample",
    ),
    # 4. broken gates halt with value, threshold and sample size
    pytest.param(
        Case(
            values={**GOOD, "error_rate": 0.08},
            samples=412,
            decision="halt",
            reason="error_rate 0.08 > 0.05 over 412 samples",
            gate="error_rate<=0.05",
            value=0.08,
        ),
        id="error-rate-halts",
    ),
    pytest.param(Case(values={**GOOD, "error_rate": 0.05}), id="error-rate-exactly-at-passes"),
    pytest.param(
        Case(
            values={**GOOD, "agreement": 0.85},
            decision="halt",
            reason="agreement 0.85 < 0.9 over 100 samples",
            gate="agreement>=0.9",
            value=0.85,
        ),
        id="agreement-halts",
    ),
    pytest.param(Case(values={**GOOD, "agreement": 0.9}), id="agreement-exactly-at-passes"),
    pytest.param(
        Case(
            values={**GOOD, "latency_ratio": 3.5},
            decision="halt",
            reason="latency_ratio 3.5 > 2 over 100 samples",
            gate="latency_ratio<=2",
        ),
        id="slow-release-halts",
    ),
    pytest.param(
        Case(
            values={**GOOD, "confidence_shift": 0.31},
            decision="halt",
            reason="confidence_shift 0.31 > 0.3",
        ),
        id="confidence-shift-halts",
    ),
    pytest.param(
        Case(
            values={**GOOD, "error_rate": 0.050001},
            decision="halt",
            reason="error_rate 0.050001 > 0.05 over",
        ),
        id="value-near-threshold-printed-exactly",
    ),
    pytest.param(
        Case(
            values={"latency_p95_ms": 51.0, "error_rate": 0.5},
            gates=g("latency_p95_ms<=50", "error_rate<0.1"),
            decision="halt",
            reason="latency_p95_ms 51 > 50 over 100 samples",
            gate="latency_p95_ms<=50",
        ),
        id="first-broken-gate-in-order",
    ),
    # 5. gates without data: required waits, default skipped
    pytest.param(
        Case(
            values={"error_rate": 0.01},
            gates=g("agreement>=0.9", "error_rate<0.05"),
            decision="wait",
            reason="no data yet for agreement",
            gate="agreement>=0.9",
        ),
        id="required-without-data-waits",
    ),
    pytest.param(
        Case(
            values={"agreement": None, "error_rate": math.nan},
            gates=g("error_rate<0.05"),
            decision="wait",
            reason="no data yet for error_rate",
        ),
        id="nan-is-no-data",
    ),
    pytest.param(
        Case(
            values={"error_rate": 0.01},
            reason="2 gates hold over 100 samples "
            "(no data, skipped: agreement, confidence_shift, latency_ratio)",
        ),
        id="defaults-without-data-skipped",
    ),
    pytest.param(
        Case(
            values={"agreement": 0.5},
            gates=g("offload_rate<0.2", "agreement>=0.9"),
            decision="halt",
            reason="agreement 0.5 < 0.9",
        ),
        id="broken-gate-halts-before-missing-data",
    ),
    # 6. pass
    pytest.param(Case(values=GOOD, reason="5 gates hold over 100 samples"), id="all-hold"),
    pytest.param(Case(gates=(), reason="0 gates hold"), id="no-gates-pass-after-bake"),
    pytest.param(
        Case(failed=1, values=GOOD, gates=g("failure_rate<=0.1", "agreement>=0.95")),
        id="explicit-failure-gate-at-threshold-passes",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_evaluate(case: Case) -> None:
    metrics = WaveMetrics(case.devices, case.finished, case.failed, case.samples, case.values)
    finished_at = None if case.baked_for is None else NOW - case.baked_for
    verdict = evaluate(
        case.gates,
        metrics,
        finished_at=finished_at,
        bake_s=case.bake_s,
        min_sample=MIN_SAMPLE,
        now=NOW,
    )
    assert verdict.decision == case.decision, verdict.reason
    assert case.reason in verdict.reason
    assert verdict.samples == case.samples
    if case.gate is not None:
        assert verdict.gate == case.gate
    if case.value is not None:
        assert verdict.value == pytest.approx(case.value)
    if verdict.decision == "halt":
        broken = next(x for x in case.gates if str(x) == verdict.gate)
        assert verdict.threshold == broken.threshold
        assert verdict.value is not None and not broken.holds(verdict.value)


def test_evaluate_does_not_change_its_inputs() -> None:
    values: dict[str, float | None] = {"error_rate": 0.01}
    evaluate(
        DEFAULT_GATES,
        WaveMetrics(10, 10, 0, 100, values),
        finished_at=0.0,
        bake_s=0.0,
        min_sample=0,
        now=1.0,
    )
    assert values == {"error_rate": 0.01}


def test_verdict_as_dict_is_json() -> None:
    verdict = Verdict(
        "halt", "error_rate 0.08 > 0.05 over 412 samples", "error_rate<=0.05", 0.08, 0.05, 412
    )
    assert json.loads(json.dumps(verdict.as_dict())) == {
        "decision": "halt",
        "reason": "error_rate 0.08 > 0.05 over 412 samples",
        "gate": "error_rate<=0.05",
        "value": 0.08,
        "threshold": 0.05,
        "samples": 412,
    }


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        pytest.param([], [0.5], None, id="a-empty"),
        pytest.param([0.5], [], None, id="b-empty"),
        pytest.param([0.9, 0.8, 0.7], [0.7, 0.8, 0.9], 0.0, id="same"),
        pytest.param([0.1, 0.2], [0.8, 0.9], 1.0, id="disjoint"),
        pytest.param([1, 2, 3, 4], [3, 4, 5, 6], 0.5, id="half-overlap"),
        pytest.param([1, 1, 2], [1, 2, 2], 1 / 3, id="ties"),
        pytest.param([0.5], [0.1, 0.5, 0.9], 1 / 3, id="unequal-sizes"),
    ],
)
def test_ks_distance(a: list[float], b: list[float], distance: float | None) -> None:
    assert ks_distance(a, b) == pytest.approx(distance)
    assert ks_distance(b, a) == pytest.approx(distance)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param([], None, id="empty"),
        pytest.param([7.0], 7.0, id="one"),
        pytest.param([float(v) for v in range(100, 0, -1)], 95.0, id="hundred-unsorted"),
        pytest.param([float(v) for v in range(1, 21)], 19.0, id="twenty"),
        pytest.param([float(v) for v in range(1, 11)], 10.0, id="ten-is-the-max"),
    ],
)
def test_p95(values: list[float], expected: float | None) -> None:
    assert p95(values) == expected
