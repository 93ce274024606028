"""The agent's settings: strict TOML, flags derived from the model, clear errors."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from agent.config import AgentSettings, add_flags, load_settings, parse_listen, validate
from agent.errors import ConfigError


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return parser.parse_args(list(argv))


def test_flags_override_the_file(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'device_id = "from-file"\nbroker = "mqtt://a:1"\ntags = { site = "lab" }\n'
        '[outbox]\nmax_rows = 5\n[[models]]\npath = "m.tflite"\n'
    )
    s = load_settings(
        _args(
            "--config",
            str(config),
            "--device-id",
            "cam-1",
            "--outbox-max-rows",
            "10",
            "--backends",
            "litert, onnxruntime",
            "--tag",
            "rack=3",
            "--uplink-linger-s",
            "0",
        )
    )
    assert s.device_id == "cam-1"
    assert s.broker == "mqtt://a:1"
    assert s.outbox.max_rows == 10
    assert s.backends == ["litert", "onnxruntime"]
    assert s.tags == {"site": "lab", "rack": "3"}
    assert s.uplink.linger_s == 0
    assert [m.path for m in s.models] == [Path("m.tflite")]


def test_model_flag_replaces_the_models_of_the_file(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('device_id = "d"\n[[models]]\npath = "a.tflite"\n')
    s = load_settings(_args("--config", str(config), "--model", "b.tflite", "--model", "c.onnx"))
    assert [m.path.name for m in s.models] == ["b.tflite", "c.onnx"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"device_id": "d", "listn": "x"}, "listn: unknown key (did you mean 'listen'?)"),
        ({"device_id": "d", "outbox": {"max_rowz": 1}}, "outbox.max_rowz: unknown key"),
        ({"device_id": "d", "outbox": {"synchronous": "OFF"}}, "outbox.synchronous"),
        ({"device_id": "a/b"}, "invalid device id"),
        ({}, "device_id: required"),
        ({"device_id": "d", "listen": "nohost"}, "expected host:port"),
        ({"device_id": "d", "threads": 0}, "threads"),
        ({"device_id": "d", "models": [{"path": "m", "extra": 1}]}, "models.0.extra: unknown"),
    ],
)
def test_bad_settings_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(data)


def test_bad_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("device_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_args("--config", str(bad)))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(_args("--config", str(tmp_path / "absent.toml")))


def test_bad_tag_flag() -> None:
    with pytest.raises(ConfigError, match="--tag 'oops': expected KEY=VALUE"):
        load_settings(_args("--device-id", "d", "--tag", "oops"))


def test_every_setting_has_a_flag() -> None:
    from agent.config import _SECTIONS as config_sections

    parser = argparse.ArgumentParser()
    add_flags(parser)
    flags = {a.dest for a in parser._actions}
    for name in AgentSettings.model_fields:
        if name in config_sections:
            continue
        assert name in flags or name in ("models", "tags"), name
    for section in config_sections:
        model = AgentSettings.model_fields[section].annotation
        assert isinstance(model, type)
        for key in model.model_fields:  # type: ignore[attr-defined]
            assert f"{section}_{key}" in flags


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:8500", ("127.0.0.1", 8500)), ("[::1]:0", ("::1", 0)), ("host:1", ("host", 1))],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected
