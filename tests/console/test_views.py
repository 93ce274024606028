"""Pure pieces of the pages: filters with units, parameters, the fallback history, gate charts,
progress bars, and the start form's translation into the API's body."""

from __future__ import annotations

from typing import Any

import pytest
from markupsafe import Markup

from controlplane.console import params
from controlplane.console.device import FallbackState, fallback_events
from controlplane.console.forms import local_path
from controlplane.console.rollout_actions import spec_body
from controlplane.console.rollouts import bar, gate_chart
from controlplane.console.templating import (
    chart_json,
    duration,
    ms,
    per_second,
    percent,
    size,
    time_tag,
    with_query,
)
from controlplane.errors import BadRequest


@pytest.mark.parametrize(
    ("fn", "value", "text"),
    [
        (ms, 3.456, "3.5\u00a0ms"),
        (ms, 1234.0, "1,234\u00a0ms"),
        (ms, None, "\u2014"),
        (ms, float("nan"), "\u2014"),
        (percent, 0.125, "12.5\u00a0%"),
        (per_second, 4.2, "4.20\u00a0/s"),
        (per_second, 42.0, "42.0\u00a0/s"),
        (size, 512, "512\u00a0B"),
        (size, 2 * 2**20, "2.0\u00a0MiB"),
        (duration, 45, "45\u00a0s"),
        (duration, 200, "3\u00a0min 20\u00a0s"),
        (duration, 7500, "2\u00a0h 05\u00a0min"),
        (duration, 3 * 86400 + 3600 * 4, "3\u00a0d 4\u00a0h"),
    ],
)
def test_numbers_have_units(fn: Any, value: Any, text: str) -> None:
    assert fn(value) == text


def test_times_are_utc_in_a_time_element() -> None:
    assert time_tag(0) == Markup(
        '<time datetime="1970-01-01T00:00:00Z">1970-01-01 00:00:00 UTC</time>'
    )
    assert time_tag(None) == "\u2014"


def test_chart_json_cannot_close_its_script() -> None:
    text = chart_json({"label": "</script><script>alert(1)</script>"})
    assert "</script>" not in text and "<" not in text


def test_links_keep_the_filters() -> None:
    assert with_query({"q": "cam", "page": "2", "x": ""}, page=3) == "?q=cam&page=3"
    assert with_query({"q": "cam", "page": "2"}, page=None) == "?q=cam"
    assert with_query({}) == "?"


@pytest.mark.parametrize(
    ("raw", "ok"),
    [("/results?device=a", True), ("/", True), ("https://x.example/", False),
     ("//x.example", False), ("/\\x.example", False), ("results", False), (None, False)],
)  # fmt: skip
def test_redirects_stay_on_the_site(raw: str | None, ok: bool) -> None:
    assert (local_path(raw, "/default") == raw) is ok


@pytest.mark.parametrize(
    ("fn", "raw"),
    [
        (params.page_number, "0"), (params.page_number, "100001"), (params.page_number, "1.5"),
        (lambda r: params.time_range(r), "2h"), (lambda r: params.share("c", r), "1.5"),
        (lambda r: params.share("c", r), "nan"), (lambda r: params.yes_no("o", r), "true"),
        (params.release, "digits"), (params.release, "a b:1"), (params.tag, "k"),
        (params.search, "x" * 200), (lambda r: params.id_list(r, "devices", 2), "a,b,c"),
        (params.rollout_id, "a/b"),
    ],
)  # fmt: skip
def test_bad_parameters_are_refused(fn: Any, raw: str) -> None:
    with pytest.raises(BadRequest):
        fn(raw)


def test_good_parameters_parse() -> None:
    assert params.page_number(None) == 1 and params.page_number("7") == 7
    assert params.time_range(None) == ("1h", 3600.0)
    assert params.release("digits-edge:2.0.0+b1") == params.ReleaseRef("digits-edge", "2.0.0+b1")
    assert params.tag("site=plant-3") == ("site", "plant-3")
    assert params.share("c", "0.25") == 0.25
    assert params.id_list("a,b", "devices", 2) == ["a", "b"]
    assert params.search("  cam  ") == "cam" and params.search("   ") is None


def state(backend: str, reason: str | None = None, demoted: tuple[str, ...] = (),
          restarts: int | None = 0) -> FallbackState:  # fmt: skip
    return FallbackState(backend, reason, demoted, restarts)


def test_the_fallback_history_lists_only_changes() -> None:
    samples = [
        (1.0, state("edgetpu")),
        (2.0, state("edgetpu")),
        (3.0, state("litert", "edgetpu: USB transfer error", ("edgetpu",), 1)),
        (4.0, state("litert", "edgetpu: USB transfer error", ("edgetpu",), 1)),
        (5.0, state("litert", "edgetpu: USB transfer error", ("edgetpu",), 3)),
        (6.0, state("edgetpu", None, (), 3)),
    ]
    events = fallback_events(samples)
    assert [e["at"] for e in events] == [1.0, 3.0, 5.0, 6.0]
    assert events[1]["what"] == (
        "backend edgetpu -> litert; fallback reason changed; demoted: edgetpu; 1 backend restart"
    )
    assert events[2]["what"] == "2 backend restarts"
    assert events[3]["what"] == "backend litert -> edgetpu; fallback ended; demoted: none"
    assert fallback_events([]) == []


def test_a_gate_chart_puts_each_wave_against_the_threshold() -> None:
    evaluations = {
        0: {"metrics": {"values": {"latency_ratio": 1.2}}},
        1: {"metrics": {"values": {"latency_ratio": 3.0}}},
        2: {"metrics": {"values": {}}},
    }
    chart = gate_chart("latency_ratio<=2", evaluations)
    rows = chart["rows"]
    assert [r.holds for r in rows] == [True, False, None]
    assert rows[1].value_percent == 80.0 and rows[0].threshold_percent == pytest.approx(53.33)
    assert chart["threshold"] == 2.0 and chart["op"] == "<="


def test_progress_bars_group_device_states() -> None:
    segments = bar({"active": 2, "downloading": 1, "failed": 1, "pending": 4, "timed_out": 0}, 8)
    assert [(s["kind"], s["count"], s["percent"]) for s in segments] == [
        ("done", 2, 25.0), ("moving", 1, 12.5), ("failed", 1, 12.5), ("pending", 4, 50.0),
    ]  # fmt: skip
    assert bar({}, 0) == []


def test_the_start_form_becomes_the_apis_body() -> None:
    body = spec_body({
        "release": "digits:2", "select": "site=lab, hw=pi4", "waves": "5%,100%", "bake": "2m",
        "gates": "error_rate<0.02\n\nlatency_ratio<=1.5\n", "min_sample": "10",
        "max_per_minute": "", "on_halt": "pause", "device_timeout": "10m",
        "shadow_share": "20%", "shadow_samples": "50", "require_eval": "yes",
    })  # fmt: skip
    assert body == {
        "model": "digits", "version": "2", "select": ["site=lab", "hw=pi4"], "waves": "5%,100%",
        "bake": "2m", "on_halt": "pause", "device_timeout": "10m",
        "gates": ["error_rate<0.02", "latency_ratio<=1.5"], "min_sample": 10,
        "shadow": {"share": 0.2, "samples": 50}, "require_eval": True,
    }  # fmt: skip
    with pytest.raises(BadRequest, match="release"):
        spec_body({"release": ""})
    with pytest.raises(BadRequest, match="min_sample"):
        spec_body({"release": "d:1", "min_sample": "-3"})
