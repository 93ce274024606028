"""The alerts file: overrides per selection (most specific last wins) and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.alerts.config import AlertConfig, Override, load_alert_config
from controlplane.alerts.rules import RULES
from controlplane.errors import ConfigError


def config(*overrides: dict[str, object]) -> AlertConfig:
    return AlertConfig(tuple(Override.model_validate(o) for o in overrides))


LAYERED = config(
    {"rule": "latency_p95", "select": {"site": "north", "hw": "coral"}, "threshold": 500},
    {"rule": "latency_p95", "threshold": 300, "for_s": 60},
    {"rule": "latency_p95", "select": {"site": "north"}, "threshold": 400, "severity": "critical"},
    {"rule": "latency_p95", "select": {"site": "south"}, "enabled": False},
    {"rule": "device_offline", "select": {"site": "north"}, "threshold": 120},
)

CASES = [
    # (tags, rule, expected fields)
    ({}, "latency_p95", {"threshold": 300, "for_s": 60, "severity": "warning", "enabled": True}),
    ({"site": "north"}, "latency_p95", {"threshold": 400, "for_s": 60, "severity": "critical"}),
    ({"site": "north", "hw": "coral"}, "latency_p95", {"threshold": 500, "severity": "critical"}),
    ({"site": "north", "hw": "jetson"}, "latency_p95", {"threshold": 400}),
    ({"site": "south"}, "latency_p95", {"threshold": 300, "enabled": False}),
    ({"site": "north"}, "device_offline", {"threshold": 120, "for_s": 0.0}),
    ({"site": "south"}, "device_offline", {"threshold": 600}),
    ({"site": "north"}, "thermal", {"threshold": 80, "for_s": 120}),
]


@pytest.mark.parametrize(("tags", "rule", "expected"), CASES)
def test_most_specific_selection_wins(
    tags: dict[str, str], rule: str, expected: dict[str, object]
) -> None:
    params = LAYERED.params(rule, tags).as_dict()
    assert {k: params[k] for k in expected} == expected


def test_same_specificity_later_in_the_file_wins() -> None:
    c = config(
        {"rule": "thermal", "select": {"site": "a"}, "threshold": 70},
        {"rule": "thermal", "select": {"hw": "pi"}, "threshold": 75},
    )
    assert c.params("thermal", {"site": "a", "hw": "pi"}).threshold == 75
    assert c.params("thermal", {"site": "a"}).threshold == 70


def test_the_resolver_memoises_on_selected_tags_only() -> None:
    resolve = LAYERED.resolver()
    a = resolve({"site": "north", "serial": "1"})
    b = resolve({"site": "north", "serial": "2"})
    assert a is b
    assert a == LAYERED.effective({"site": "north"})
    assert resolve({"site": "south"})["latency_p95"].enabled is False


def test_no_file_means_the_defaults() -> None:
    c = load_alert_config(None)
    assert c.effective({"site": "x"}) == {name: spec.defaults for name, spec in RULES.items()}


def test_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    path.write_text(json.dumps({"overrides": [
        {"rule": "device_offline", "threshold": 5},
        {"rule": "error_rate", "select": {"site": "lab"}, "min_count": 5, "severity": "info"},
    ]}))  # fmt: skip
    c = load_alert_config(path)
    assert c.source == str(path)
    assert c.params("device_offline", {}).threshold == 5
    assert c.params("error_rate", {"site": "lab"}).min_count == 5
    assert c.describe()["overrides"][1]["select"] == {"site": "lab"}


def test_a_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.toml"
    path.write_text(
        '[[overrides]]\nrule = "disk_full"\nthreshold = 80\nmin_free_bytes = 1000000000\n\n'
        '[[overrides]]\nrule = "thermal"\nselect = { site = "desert" }\nthreshold = 90\n'
    )
    c = load_alert_config(path)
    assert c.params("disk_full", {}).min_free_bytes == 1_000_000_000
    assert c.params("thermal", {"site": "desert"}).threshold == 90


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"overrides": [{"rule": "thermal", "treshold": 70}]}',
         "unknown key `overrides[0].treshold` (did you mean `threshold`?)"),
        ('{"override": []}', "unknown key `override` (did you mean `overrides`?)"),
        ('{"overrides": [{"rule": "latency"}]}', "unknown rule 'latency'"),
        ('{"overrides": [{"threshold": 3}]}', "`overrides[0].rule` is required"),
        ('{"overrides": [{"rule": "thermal", "severity": "page"}]}',
         "invalid `overrides[0].severity`"),
        ('{"overrides": [{"rule": "thermal", "for_s": -1}]}', "invalid `overrides[0].for_s`"),
        ('{"overrides": [{"rule": "accelerator_fallback", "threshold": 1}]}',
         "accelerator_fallback has no threshold"),
        ('{"overrides": [{"rule": "thermal", "min_count": 1}]}',
         "min_count applies to error_rate only"),
        ('{"overrides": [{"rule": "thermal", "select": {"site": "a b"}}]}',
         "invalid `overrides[0].select`"),
        ('{"overrides": [', "is not valid JSON"),
    ],
)  # fmt: skip
def test_bad_files_are_refused_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "alerts.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_alert_config(path)
    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def test_bad_toml_missing_file_and_extension(tmp_path: Path) -> None:
    bad = tmp_path / "alerts.toml"
    bad.write_text("[[overrides]\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_alert_config(bad)
    with pytest.raises(ConfigError, match="cannot read the alerts file"):
        load_alert_config(tmp_path / "missing.json")
    yaml = tmp_path / "alerts.yaml"
    yaml.write_text("overrides: []")
    with pytest.raises(ConfigError, match=r"expected a \.json or \.toml file"):
        load_alert_config(yaml)
