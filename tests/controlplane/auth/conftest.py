"""An API-only app with ``auth`` on, on a real store, and clients with each role's token."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from controlplane.api import Context
from controlplane.app import create_app
from controlplane.records import Incoming
from controlplane.settings import Settings
from controlplane.store import Store
from tests.controlplane.auth_helpers import make_token
from tests.controlplane.rollouts.devices import PlayedDevice, add_release

Client = Callable[..., httpx.AsyncClient]


def settings(tmp_path: Path, **change: Any) -> Settings:
    return Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "data", auth=True, **change)


@pytest.fixture
def app(tmp_path: Path, store: Store) -> Starlette:
    return create_app(settings(tmp_path), store=store, mqtt=False)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[Client]:
    """``client(token=None, base_url=...)``: a new client on the app; closed at the end."""
    made: list[httpx.AsyncClient] = []

    def make(token: str | None = None, base_url: str = "http://cp") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        c = httpx.AsyncClient(transport=transport, base_url=base_url, headers=headers)
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


@pytest.fixture
def tokens(store: Store) -> dict[str, str]:
    """A token per role (users admin, olga the operator, vic the viewer)."""
    return {
        "admin": make_token(store, "admin", "admin"),
        "operator": make_token(store, "olga", "operator"),
        "viewer": make_token(store, "vic", "viewer"),
    }


async def seed_fleet(app: Starlette, store: Store) -> None:
    """A release (digits 2) and three devices of site lab, for rollouts."""
    ctx: Context = app.state.ctx
    assert ctx.release_key is not None
    await add_release(store, ctx.release_key, "2")
    births = [
        PlayedDevice("mqtt://127.0.0.1:1", f"cam-{i}", ctx.release_key.public).status()
        for i in range(3)
    ]
    await store.write(*[Incoming(b.device_id, time.time(), b) for b in births])


ROLLOUT = {"model": "digits", "version": "2", "select": {"site": "lab"}}


def error(response: httpx.Response, status: int, *words: str) -> str:
    """Check a JSON error answer and return its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message: str = response.json()["error"]
    for word in words:
        assert word in message, (word, message)
    return message
