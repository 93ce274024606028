"""Who may call which route: one table, read by the middleware, and nothing else.

:data:`POLICY` maps ``(method, route pattern)`` to a :class:`Rule`. The pattern is the route's
own (``/api/v1/rollouts/{id}/{action}``), found by matching the request against the app's routes
the way the router does (:func:`resolve`), so a rule cannot be dodged by spelling a path
differently. A route that is not in the table needs ``admin``: deny by default, so a new route is
safe before anyone thinks about it (add its row here; ``tests/controlplane/auth/test_policy.py``
lists the routes of the app that rely on the default). A path that matches no route needs any
authenticated user (they get the router's 404 or 405; nobody else learns which paths exist).

``open`` routes need no credentials, each for a reason:

- ``/healthz``: load balancers and orchestrators probe it without credentials; it says only
  whether the store and MQTT are up.
- ``/metrics``: Prometheus scrapes without credentials; fleet-level counts and latencies, no ids
  of people, no secrets. Keep the port off the internet, or scrape through a proxy that
  authenticates.
- the routes devices call: artifacts (content-addressed: a device checks the SHA-256 of what it
  downloads and the release's Ed25519 signature, so serving them leaks nothing a device may not
  have and cannot be used to plant anything), the release public key and the fleet CA's
  certificate (public by nature), kept-input uploads (keyed by
  device and result id; a second upload with other bytes is refused; not audited, as they are
  data traffic, not operator actions) and enrollment (its one-time token or current certificate
  is the credential, checked by its handler). Artifacts and uploads are ``device`` routes: a
  request signed by a device is checked, and a revoked device refused, whatever ``auth`` is;
  with ``device_auth = required`` an unsigned one is refused (operators read artifacts with
  ``viewer``): :mod:`controlplane.auth.devices`.
- ``/login`` and the console's static files: needed before anyone is logged in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import Scope

from controlplane.auth.roles import Access

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Rule:
    access: Access
    audit: bool = True  # record mutating requests in the audit log (False: device data traffic)
    password: bool = False  # also accept a user's password (HTTP Basic): creating a CLI token
    device: bool = False  # a route devices call: signed requests checked (auth/devices.py)


def _rows() -> dict[tuple[str, str], Rule]:
    open_, viewer, operator, admin = Rule("open"), Rule("viewer"), Rule("operator"), Rule("admin")
    table: list[tuple[Rule, str, str]] = [
        # health, metrics, devices (see the module docstring for why each is open)
        (open_, "GET", "/healthz"),
        (open_, "GET", "/metrics"),
        (Rule("open", device=True), "GET HEAD", "/api/v1/artifacts/{sha256}"),
        (open_, "GET", "/api/v1/keys/release"),
        (Rule("open", audit=False, device=True), "PUT", "/api/v1/samples/{device_id}/{result_id}"),
        (open_, "POST", "/api/v1/enroll"),
        (open_, "POST", "/api/v1/enroll/renew"),
        (open_, "GET", "/api/v1/pki/ca"),
        # the console's way in
        (open_, "GET POST", "/login"),
        (open_, "GET HEAD", "/static/{path:path}"),
        (viewer, "POST", "/logout"),
        # reading the fleet
        (viewer, "GET", "/api/v1/devices"),
        (viewer, "GET", "/api/v1/devices/{id}"),
        (viewer, "GET", "/api/v1/devices/{id}/telemetry"),
        (viewer, "GET", "/api/v1/devices/{id}/alerts"),
        (viewer, "GET", "/api/v1/devices/{id}/commands"),
        (viewer, "GET", "/api/v1/devices/{id}/identity"),
        (viewer, "GET", "/api/v1/results"),
        (viewer, "GET", "/api/v1/results/agreement"),
        (viewer, "GET", "/api/v1/results/{device_id}/{result_id}/feedback"),
        (viewer, "GET", "/api/v1/samples/{device_id}/{result_id}"),
        (viewer, "GET", "/api/v1/datasets/{model}"),
        (viewer, "GET", "/api/v1/models"),
        (viewer, "GET", "/api/v1/models/{name}"),
        (viewer, "GET", "/api/v1/models/{name}/releases/{version}"),
        (viewer, "GET", "/api/v1/models/{name}/releases/{version}/evaluations"),
        (viewer, "GET", "/api/v1/rollouts"),
        (viewer, "GET", "/api/v1/rollouts/{id}"),
        (viewer, "GET", "/api/v1/alerts"),
        (viewer, "GET", "/api/v1/alerts/rules"),
        (viewer, "GET", "/api/v1/alerts/{id}"),
        (viewer, "GET", "/api/v1/data"),
        # one's own account: handlers check "self, or an admin" where a user is named
        (viewer, "GET", "/api/v1/me"),
        (Rule("viewer", password=True), "POST", "/api/v1/tokens"),
        (viewer, "GET", "/api/v1/tokens"),
        (viewer, "DELETE", "/api/v1/tokens/{id}"),
        (viewer, "PUT", "/api/v1/users/{name}/password"),
        # operating the fleet
        (operator, "PUT", "/api/v1/artifacts"),
        (operator, "POST", "/api/v1/models/{name}/releases"),
        (operator, "POST", "/api/v1/models/{name}/releases/{version}/evaluations"),
        (operator, "POST", "/api/v1/rollouts"),
        (operator, "POST", "/api/v1/rollouts/{id}/{action}"),
        (operator, "PATCH", "/api/v1/devices/{id}/tags"),
        (operator, "PUT", "/api/v1/results/{device_id}/{result_id}/feedback"),
        (operator, "POST", "/api/v1/devices/{id}/commands"),
        # administration (admin is also the default: these rows only make it explicit)
        (admin, "GET POST", "/api/v1/users"),
        (admin, "GET PATCH", "/api/v1/users/{name}"),
        (admin, "GET", "/api/v1/audit"),
        (admin, "POST", "/api/v1/enroll/tokens"),
        (admin, "POST", "/api/v1/devices/{id}/certificate"),
        (admin, "POST", "/api/v1/devices/{id}/revoke"),
        (admin, "DELETE", "/api/v1/data"),
        (admin, "GET", "/api/v1/data/keys"),
        (admin, "POST", "/api/v1/data/keys/rotate"),
        # the console (controlplane/console/): reading is a viewer's, its forms an operator's
        (viewer, "GET", "/"),
        (viewer, "GET", "/fleet"),
        (viewer, "GET", "/devices"),
        (viewer, "GET", "/devices/{id}"),
        (viewer, "GET", "/models"),
        (viewer, "GET", "/rollouts"),
        (viewer, "GET", "/rollouts/{id}"),
        (viewer, "GET", "/alerts"),
        (viewer, "GET", "/results"),
        (viewer, "GET", "/events"),
        (operator, "GET POST", "/rollouts/new"),
        (operator, "GET POST", "/rollouts/{id}/{action}"),
        (operator, "POST", "/results/feedback"),
        (operator, "POST", "/devices/{id}/diagnostics"),  # as POST /api/v1/devices/{id}/commands
    ]
    rows: dict[tuple[str, str], Rule] = {}
    for rule, methods, pattern in table:
        for method in methods.split():
            assert (method, pattern) not in rows, (method, pattern)
            rows[(method, pattern)] = rule
    return rows


POLICY: dict[tuple[str, str], Rule] = _rows()
DEFAULT = Rule("admin")
"""A route not in :data:`POLICY`: deny by default."""
NO_ROUTE = Rule("viewer")
"""A path no route matches: the 404 (or 405) goes to authenticated users only."""


def rule_for(method: str, pattern: str | None) -> Rule:
    """The rule of a request whose route pattern is ``pattern`` (None: no route matched)."""
    if pattern is None:
        return NO_ROUTE
    rule = POLICY.get((method, pattern))
    if rule is None and method == "HEAD":
        rule = POLICY.get(("GET", pattern))
    return rule or DEFAULT


def resolve(routes: Sequence[BaseRoute], scope: Scope) -> tuple[str, dict[str, Any]] | None:
    """The pattern and path parameters of the route that will serve ``scope``, as the router
    matches it (mounts included); None when no route takes the path with this method."""
    for route in routes:
        match, child = route.matches(scope)
        if match != Match.FULL:
            continue  # PARTIAL: the path with another method (the router answers 405)
        params = dict(child.get("path_params", {}))
        if isinstance(route, Route):
            return route.path, params
        if isinstance(route, Mount):
            if route.routes:
                inner = resolve(route.routes, {**scope, **child})
                if inner is None:
                    return None
                return route.path + inner[0], inner[1]
            matched = len(child.get("root_path", "")) - len(scope.get("root_path", ""))
            params["path"] = _route_path(scope)[matched:].lstrip("/")
            return route.path + "/{path:path}", params
        return None  # some other kind of route (a Host): deny by default
    return None


def _route_path(scope: Scope) -> str:
    """The path below the scope's root path (as the router sees it)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
