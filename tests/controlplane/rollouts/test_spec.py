from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.rollouts.spec import (
    DEFAULT_GATES,
    METRICS,
    Gate,
    parse_duration,
    parse_gate,
    parse_selector,
    parse_waves,
    selector_matches,
)

DOCS = Path(__file__).resolve().parents[3] / "docs"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("0", 0.0, id="zero"),
        pytest.param("0s", 0.0, id="zero-seconds"),
        pytest.param("45s", 45.0, id="seconds"),
        pytest.param("10m", 600.0, id="minutes"),
        pytest.param("1h30m", 5400.0, id="hours-minutes"),
        pytest.param("2h", 7200.0, id="hours"),
        pytest.param("1d", 86400.0, id="day"),
        pytest.param("1.5h", 5400.0, id="decimal"),
        pytest.param(" 1h 5m 3s ", 3903.0, id="spaces"),
        pytest.param("10M", 600.0, id="upper-case"),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("10", id="no-unit"),
        pytest.param("10x", id="unknown-unit"),
        pytest.param("-5m", id="negative"),
        pytest.param("30m1h", id="wrong-order"),
        pytest.param("m", id="unit-only"),
        pytest.param("1h1h", id="repeated-unit"),
    ],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration .*expected a number with a unit, like 45s"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "waves"),
    [
        pytest.param("1%,10%,50%,100%", [0.01, 0.1, 0.5, 1.0], id="percentages"),
        pytest.param("100%", [1.0], id="one-wave"),
        pytest.param("0.05,0.5,1", [0.05, 0.5, 1.0], id="fractions"),
        pytest.param(" 5% , 100% ", [0.05, 1.0], id="spaces"),
        pytest.param("0.5%,100%", [0.005, 1.0], id="fractional-percent"),
    ],
)
def test_parse_waves(text: str, waves: list[float]) -> None:
    assert parse_waves(text) == waves


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("", "'' is not a percentage", id="empty"),
        pytest.param("1%,,100%", "'' is not a percentage", id="empty-item"),
        pytest.param("ten%,100%", "'ten%' is not a percentage", id="not-a-number"),
        pytest.param("0%,100%", r"'0%' is not in \(0%, 100%\]", id="zero"),
        pytest.param("10%,120%", r"'120%' is not in \(0%, 100%\]", id="over-100"),
        pytest.param("10,100", r"'10' is not in \(0%, 100%\]", id="percent-without-sign"),
        pytest.param("50%,10%,100%", "'10%' does not grow", id="decreasing"),
        pytest.param("10%,10%,100%", "'10%' does not grow", id="repeated"),
        pytest.param("1%,10%,50%", "the last wave must be 100%", id="not-complete"),
    ],
)
def test_parse_waves_refuses(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=rf"waves '.*': {problem}") as info:
        parse_waves(text)
    assert "like 1%,10%,50%,100%" in str(info.value)


@pytest.mark.parametrize(
    ("items", "selector"),
    [
        pytest.param([], {}, id="empty"),
        pytest.param(["site=lab", "hw=coral"], {"site": "lab", "hw": "coral"}, id="two"),
        pytest.param([" site = lab "], {"site": "lab"}, id="spaces"),
        pytest.param(["url=a=b"], {"url": "a=b"}, id="equals-in-value"),
        pytest.param(["site=lab", "site=lab"], {"site": "lab"}, id="same-twice"),
    ],
)
def test_parse_selector(items: list[str], selector: dict[str, str]) -> None:
    assert parse_selector(items) == selector


@pytest.mark.parametrize(
    ("items", "problem"),
    [
        pytest.param(["site"], "expected TAG=VALUE", id="no-equals"),
        pytest.param(["=lab"], "expected TAG=VALUE", id="no-key"),
        pytest.param(["site="], "expected TAG=VALUE", id="no-value"),
        pytest.param(["site=lab", "site=field"], "already selected as 'lab'", id="conflict"),
    ],
)
def test_parse_selector_refuses(items: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=rf"selector '.*': .*{problem}"):
        parse_selector(items)


@pytest.mark.parametrize(
    ("selector", "tags", "matches"),
    [
        pytest.param({}, {}, True, id="empty-selects-all"),
        pytest.param({}, {"site": "lab"}, True, id="empty-selects-tagged"),
        pytest.param({"site": "lab"}, {"site": "lab", "hw": "pi"}, True, id="subset"),
        pytest.param({"site": "lab"}, {"site": "field"}, False, id="other-value"),
        pytest.param({"site": "lab"}, {}, False, id="untagged"),
        pytest.param({"site": "lab", "hw": "pi"}, {"site": "lab"}, False, id="one-missing"),
        pytest.param({"site": "lab"}, {"Site": "lab"}, False, id="case-sensitive"),
    ],
)
def test_selector_matches(selector: dict[str, str], tags: dict[str, str], matches: bool) -> None:
    assert selector_matches(selector, tags) is matches


@pytest.mark.parametrize(
    ("text", "gate"),
    [
        pytest.param("error_rate<0.02", Gate("error_rate", "<", 0.02), id="less"),
        pytest.param("latency_p95_ms<=50", Gate("latency_p95_ms", "<=", 50.0), id="less-equal"),
        pytest.param("agreement>0.95", Gate("agreement", ">", 0.95), id="greater"),
        pytest.param("agreement >= 90%", Gate("agreement", ">=", 0.9), id="spaces-percent"),
        pytest.param("failure_rate<=0", Gate("failure_rate", "<=", 0.0), id="zero"),
        pytest.param("latency_ratio<=1.5", Gate("latency_ratio", "<=", 1.5), id="ratio"),
        pytest.param("confidence_shift<1e-1", Gate("confidence_shift", "<", 0.1), id="exponent"),
    ],
)
def test_parse_gate(text: str, gate: Gate) -> None:
    assert parse_gate(text) == gate
    assert parse_gate(text).required


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param("", "expected METRIC<OP>VALUE", id="empty"),
        pytest.param("error_rate", "expected METRIC<OP>VALUE", id="no-op"),
        pytest.param("error_rate=0.1", "expected METRIC<OP>VALUE", id="equals"),
        pytest.param("error_rate<", "expected METRIC<OP>VALUE", id="no-value"),
        pytest.param("error_rate<0.1 0.2", "expected METRIC<OP>VALUE", id="two-values"),
        pytest.param("errors<0.1", "unknown metric 'errors'; known: failure_rate, ", id="unknown"),
        pytest.param("error_rate<abc", "'abc' is not a number", id="not-a-number"),
        pytest.param("latency_p95_ms<inf", "must be a finite number", id="infinite"),
        pytest.param("latency_p95_ms<nan", "must be a finite number", id="nan"),
        pytest.param("agreement>=90", "share between 0 and 1; write 90% ", id="percent-no-sign"),
        pytest.param("error_rate<-0.1", "share between 0 and 1", id="negative-share"),
    ],
)
def test_parse_gate_refuses(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=rf"gate '.*': .*{problem}"):
        parse_gate(text)


@pytest.mark.parametrize(
    ("gate", "value", "holds"),
    [
        pytest.param(Gate("m", "<", 1.0), 0.99, True, id="lt-below"),
        pytest.param(Gate("m", "<", 1.0), 1.0, False, id="lt-at"),
        pytest.param(Gate("m", "<=", 1.0), 1.0, True, id="le-at"),
        pytest.param(Gate("m", "<=", 1.0), 1.01, False, id="le-above"),
        pytest.param(Gate("m", ">", 1.0), 1.0, False, id="gt-at"),
        pytest.param(Gate("m", ">", 1.0), 1.01, True, id="gt-above"),
        pytest.param(Gate("m", ">=", 1.0), 1.0, True, id="ge-at"),
        pytest.param(Gate("m", ">=", 1.0), 0.99, False, id="ge-below"),
    ],
)
def test_gate_holds(gate: Gate, value: float, holds: bool) -> None:
    assert gate.holds(value) is holds


@pytest.mark.parametrize(
    ("gate", "text"),
    [
        pytest.param(Gate("error_rate", "<", 0.02), "error_rate<0.02", id="fraction"),
        pytest.param(Gate("latency_ratio", "<=", 2.0), "latency_ratio<=2", id="integral"),
        pytest.param(Gate("agreement", ">=", 0.9), "agreement>=0.9", id="ge"),
        pytest.param(Gate("latency_p95_ms", "<", 12.5), "latency_p95_ms<12.5", id="ms"),
    ],
)
def test_gate_str_round_trips(gate: Gate, text: str) -> None:
    assert str(gate) == text
    assert parse_gate(text) == gate


def test_default_gates_are_the_documented_ones_and_optional() -> None:
    assert [str(g) for g in DEFAULT_GATES] == [
        "failure_rate<=0.1",
        "error_rate<=0.05",
        "agreement>=0.9",
        "confidence_shift<=0.3",
        "latency_ratio<=2",
    ]
    assert not any(g.required for g in DEFAULT_GATES)
    assert all(g.metric in METRICS for g in DEFAULT_GATES)


@pytest.mark.parametrize("metric", list(METRICS))
def test_every_gate_metric_is_documented(metric: str) -> None:
    text = (DOCS / "rollouts.md").read_text()
    assert f"| `{metric}` |" in text, f"document `{metric}` in docs/rollouts.md"
