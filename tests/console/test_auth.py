"""With ``auth`` on, the console's forms carry the session's CSRF token (the ``post_form``
macro) and the auth middleware refuses a form post without it."""

from __future__ import annotations

import re
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
from tests.controlplane.auth.test_api import PASSWORD
from tests.controlplane.auth.test_console import login
from tests.controlplane.auth_helpers import make_token


@pytest.fixture
def app(tmp_path: Path, store: Store) -> Starlette:
    settings = Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "data", auth=True)
    return create_app(settings, store=store, mqtt=False)


@pytest.fixture
async def operator(app: Starlette, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    """A browser logged in as an operator, on a control plane with the test fleet."""
    await seed(store, time.time())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    admin = make_token(store, "admin", "admin")
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as api:
        made = await api.post(
            "/api/v1/users", json={"name": "olga", "role": "operator", "password": PASSWORD},
            headers={"Authorization": f"Bearer {admin}"},
        )  # fmt: skip
        assert made.status_code == 201, made.text
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as browser:
        await login(browser, "olga")
        yield browser


async def test_forms_carry_the_csrf_token_and_need_it(operator: httpx.AsyncClient) -> None:
    page = await operator.get("/results?device=cam-002")
    assert page.status_code == 200
    tokens = set(re.findall(r'name="csrf_token" value="([^"]+)"', page.text))
    assert len(tokens) == 1, "every form carries the session's one token"
    (token,) = tokens
    assert page.text.count('name="csrf_token"') == page.text.count('class="feedback-form"')
    result_id = re.findall(r'name="result_id" value="([^"]+)"', page.text)[0]
    form = {"device_id": "cam-002", "result_id": result_id, "correct": "yes"}
    refused = await operator.post("/results/feedback", data=form)
    assert refused.status_code == 403
    done = await operator.post("/results/feedback", data={**form, "csrf_token": token})
    assert done.status_code == 303, done.text
    device = (await operator.get("/devices/cam-000")).text  # diagnostics and feedback forms
    forms = device.count('<form method="post"')
    assert forms > 3 and device.count(f'name="csrf_token" value="{token}"') == forms
