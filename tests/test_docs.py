"""Docs that cannot rot: every setting, topic and metric must be documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.config import AgentSettings, ModelConfig
from protocol.topics import Channel, device_topic

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and name != "models":
            keys.extend(_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


@pytest.mark.parametrize("key", _keys(AgentSettings))
def test_every_agent_setting_is_documented(key: str) -> None:
    assert f"| `{key}` |" in (DOCS / "agent.md").read_text(), f"document `{key}` in docs/agent.md"


@pytest.mark.parametrize("key", list(ModelConfig.model_fields))
def test_every_model_setting_is_documented(key: str) -> None:
    lines = (DOCS / "agent.md").read_text().splitlines()
    row = next(line for line in lines if line.startswith("| `models` |"))
    assert f"`{key}`" in row or f"`[models.{key}]`" in row, f"document `{key}` in the models row"


@pytest.mark.parametrize("channel", list(Channel))
def test_every_topic_is_documented(channel: Channel) -> None:
    topic = device_topic("ID", channel).replace("/ID/", "/{id}/")
    assert f"`{topic}`" in (DOCS / "protocol.md").read_text(), f"document {topic}"
