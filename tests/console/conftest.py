"""The console in process on a real store, with a small fleet written as real wire messages."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from controlplane.app import create_app
from controlplane.settings import Settings
from controlplane.store import Store
from tests.console.fleetdata import seed
from tests.controlplane.auth_helpers import authorize


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "cp.db")
    s.open()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def app(tmp_path: Path, store: Store) -> Starlette:
    settings = Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "data")
    return create_app(settings, store=store, mqtt=False)


@pytest.fixture
async def empty(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a control plane that has heard from no device, with an admin's bearer token
    (tests/controlplane/auth_helpers.py: the console takes one like the API, and then needs no
    CSRF token; sessions and CSRF are tested in tests/controlplane/auth/test_console.py)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    http = httpx.AsyncClient(transport=transport, base_url="http://cp")
    async with authorize(http, app.state.ctx.store) as c:
        yield c


@pytest.fixture
async def client(app: Starlette, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a control plane with the fleet of :func:`tests.console.fleetdata.seed`, with an
    admin's bearer token."""
    await seed(store, time.time())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with authorize(httpx.AsyncClient(transport=transport, base_url="http://cp"), store) as c:
        yield c
