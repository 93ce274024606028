"""The policy table against the real app's routes: every route has a row, and a request is
matched to its route pattern the way the router matches it."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from controlplane.app import create_app
from controlplane.auth.policy import POLICY, resolve
from tests.controlplane.auth.conftest import settings


@pytest.fixture
def app(tmp_path: Path) -> Starlette:
    return create_app(settings(tmp_path), mqtt=False)


def _endpoints(app: Starlette) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []

    def walk(routes: list, prefix: str = "") -> None:  # type: ignore[type-arg]
        for route in routes:
            if isinstance(route, Route):
                for method in sorted(route.methods or ()):
                    if not (method == "HEAD" and "GET" in (route.methods or ())):
                        out.append((method, prefix + route.path))
            elif isinstance(route, Mount):
                if route.routes:
                    walk(route.routes, prefix + route.path)
                else:
                    out.append(("GET", prefix + route.path + "/{path:path}"))

    walk(app.router.routes)
    return out


def test_every_route_of_the_app_has_a_rule(app: Starlette) -> None:
    """A new route without a row needs admin (deny by default); this makes the choice explicit:
    add the route's row to controlplane/auth/policy.py with the role it needs."""
    missing = [key for key in _endpoints(app) if key not in POLICY]
    assert missing == [], f"add these to POLICY in controlplane/auth/policy.py: {missing}"


def _scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/api/v1/devices", ("/api/v1/devices", {})),
        ("POST", "/api/v1/rollouts/7/pause", ("/api/v1/rollouts/{id}/{action}",
                                              {"id": "7", "action": "pause"})),
        ("GET", "/api/v1/devices/cam-1/tags", None),  # the path exists for PATCH only
        ("PATCH", "/api/v1/devices/cam-1/tags", ("/api/v1/devices/{id}/tags", {"id": "cam-1"})),
        ("GET", "/static/console.css", ("/static/{path:path}", {"path": "console.css"})),
        ("GET", "/nothing/here", None),
        ("GET", "/api/v1/rollouts/../users", None),
    ],
)  # fmt: skip
def test_resolve_finds_the_pattern_the_router_will_use(
    app: Starlette, method: str, path: str, expected: tuple[str, dict[str, str]] | None
) -> None:
    assert resolve(app.router.routes, _scope(method, path)) == expected


def test_resolve_goes_through_mounts() -> None:
    inner = [Route("/{id}/stop", lambda r: None, methods=["POST"])]
    routes = [Mount("/api/v2/jobs", routes=inner)]
    found = resolve(routes, _scope("POST", "/api/v2/jobs/9/stop"))
    assert found == ("/api/v2/jobs/{id}/stop", {"id": "9"})
    assert resolve(routes, _scope("POST", "/api/v2/jobs/9/go")) is None
