"""Fixtures of the provisioning tests: a real Mosquitto with the generated configuration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.broker import find_mosquitto
from tests.provisioning.secure_broker import SecureBroker


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    broker = SecureBroker(tmp_path / "secure")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
