"""Shared fixtures: a real Mosquitto broker (session-wide, and a private one for outage tests).

Set ``MQTT_TEST_URL`` to use an existing broker instead of starting one for the session fixture.
Each test should use a unique device-id prefix (see ``unique``) so tests never see each other's
messages on the shared broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mosquitto import Mosquitto


@pytest.fixture(scope="session")
def broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a broker shared by the session: ``mqtt://127.0.0.1:PORT``."""
    if os.environ.get("MQTT_TEST_URL"):
        yield os.environ["MQTT_TEST_URL"]
        return
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    broker.start()
    try:
        yield broker.url
    finally:
        broker.stop()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of the test's own that it may stop and start (outage tests)."""
    broker = Mosquitto(_mkdir(tmp_path / "broker"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def unique() -> str:
    """A short unique token for device ids and topics of one test."""
    return uuid.uuid4().hex[:8]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
