"""The [models.offload] settings: validation messages, and every key documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import validate
from agent.errors import ConfigError
from agent.offload.config import DEFAULT_MIN_CONFIDENCE, OffloadConfig

DOCS = Path(__file__).resolve().parents[3] / "docs"


def settings(offload: dict[str, object]) -> dict[str, object]:
    return {"device_id": "d1", "models": [{"path": "m.tflite", "offload": offload}]}


def test_a_valid_section() -> None:
    s = validate(settings({"endpoint": "http://gpu:8000/", "model": "digits-cloud"}))
    cfg = s.models[0].offload
    assert cfg is not None and cfg.endpoint == "http://gpu:8000"  # trailing slash dropped
    assert cfg.min_confidence == DEFAULT_MIN_CONFIDENCE and not cfg.binary


@pytest.mark.parametrize(
    ("offload", "words"),
    [
        ({}, ["models.0.offload", "endpoint is required unless local_only"]),
        ({"endpoint": "gpu:8000"}, ["models.0.offload.endpoint", "http:// or https://"]),
        ({"endpoint": "http://g", "min_confidence": 1.5}, ["models.0.offload.min_confidence"]),
        ({"endpoint": "http://g", "deadline_ms": 0}, ["models.0.offload.deadline_ms"]),
        ({"endpoint": "http://g", "dedline_ms": 5}, ["unknown key", "did you mean 'deadline_ms'"]),
    ],
)
def test_mistakes_are_named(offload: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        validate(settings(offload))
    for word in words:
        assert word in str(info.value)


def test_local_only_needs_no_endpoint() -> None:
    s = validate(settings({"local_only": True}))
    assert s.models[0].offload is not None and s.models[0].offload.local_only


@pytest.mark.parametrize("key", list(OffloadConfig.model_fields))
def test_every_offload_setting_is_documented(key: str) -> None:
    assert f"| `{key}` |" in (DOCS / "agent.md").read_text(), f"document `{key}` in docs/agent.md"
