"""Fixtures of the registry's tests: an API-only app on a real store, and the digits models."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from controlplane.app import create_app
from controlplane.settings import Settings
from controlplane.store import Store
from tests.controlplane.auth_helpers import authorize

DIGITS = Path(__file__).resolve().parents[3] / "models" / "digits"


def settings(tmp_path: Path, **change: Any) -> Settings:
    return Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "data", **change)


def client_for(app: Starlette) -> httpx.AsyncClient:
    """A client on ``app`` with an admin's token (tests/controlplane/auth_helpers.py)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url="http://cp")
    return authorize(client, app.state.ctx.store)


@pytest.fixture
def app(tmp_path: Path, store: Store) -> Starlette:
    return create_app(settings(tmp_path), store=store, mqtt=False)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as c:
        yield c


def manifest(name: str = "edge_fp32.json") -> dict[str, Any]:
    """A committed manifest as the CLI sends it (golden and artifacts left out)."""
    raw: dict[str, Any] = json.loads((DIGITS / name).read_text())
    raw.pop("golden")
    raw.pop("artifacts")
    return raw


def golden() -> list[dict[str, Any]]:
    """The digits golden images, as the CLI sends them."""
    return [
        {"input": base64.b64encode(p.read_bytes()).decode(), "expected_label": p.name[0]}
        for p in sorted((DIGITS / "golden").glob("*.png"))
    ]


async def upload(client: httpx.AsyncClient, data: bytes) -> str:
    response = await client.put("/api/v1/artifacts", content=data)
    assert response.status_code in (200, 201), response.text
    sha256: str = response.json()["sha256"]
    return sha256


def error(response: httpx.Response, status: int, *words: str) -> str:
    """Check a JSON error answer and return its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message: str = response.json()["error"]
    for word in words:
        assert word in message, (word, message)
    return message
