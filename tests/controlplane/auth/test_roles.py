"""Roles, a token's scope and the route policy: pure decisions, table-driven."""

from __future__ import annotations

import pytest

from controlplane.auth.policy import DEFAULT, NO_ROUTE, POLICY, rule_for
from controlplane.auth.roles import ScopeError, allows, lowest, parse_role, token_scope


@pytest.mark.parametrize(
    ("role", "needed", "allowed"),
    [
        (None, "open", True),
        (None, "viewer", False),
        ("viewer", "viewer", True),
        ("viewer", "operator", False),
        ("viewer", "admin", False),
        ("operator", "viewer", True),
        ("operator", "operator", True),
        ("operator", "admin", False),
        ("admin", "viewer", True),
        ("admin", "operator", True),
        ("admin", "admin", True),
    ],
)
def test_roles_are_ordered(role: str | None, needed: str, allowed: bool) -> None:
    assert allows(role, needed) is allowed  # type: ignore[arg-type]


def test_parse_role_and_lowest() -> None:
    assert parse_role("operator") == "operator"
    with pytest.raises(ValueError, match="viewer, operator, admin"):
        parse_role("root")
    assert lowest("admin", "viewer", "operator") == "viewer"
    assert lowest("admin", "operator") == "operator"


@pytest.mark.parametrize(
    ("creator", "owner", "requested", "for_self", "expected"),
    [
        ("viewer", "viewer", None, True, "viewer"),
        ("operator", "operator", None, True, "operator"),
        ("operator", "operator", "viewer", True, "viewer"),
        ("admin", "admin", None, True, "admin"),
        ("admin", "admin", "operator", True, "operator"),
        # a token made with a viewer token is a viewer token, whoever owns it
        ("viewer", "admin", None, True, "viewer"),
        ("admin", "operator", None, False, "operator"),
        ("admin", "viewer", "viewer", False, "viewer"),
        # refusals
        ("viewer", "viewer", "operator", True, "above 'viewer'"),
        ("operator", "operator", "admin", True, "above 'operator'"),
        ("viewer", "admin", "admin", True, "above 'viewer'"),
        ("admin", "viewer", "operator", False, "above 'viewer'"),
        ("operator", "viewer", None, False, "only an admin"),
        ("viewer", "viewer", "viewer", False, "only an admin"),
    ],
)
def test_token_scope(
    creator: str, owner: str, requested: str | None, for_self: bool, expected: str
) -> None:
    if expected in ("viewer", "operator", "admin"):
        got = token_scope(creator, owner, requested, for_self=for_self)  # type: ignore[arg-type]
        assert got == expected
    else:
        with pytest.raises(ScopeError, match=expected):
            token_scope(creator, owner, requested, for_self=for_self)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "pattern", "access"),
    [
        ("GET", "/healthz", "open"),
        ("GET", "/metrics", "open"),
        ("GET", "/api/v1/artifacts/{sha256}", "open"),
        ("HEAD", "/api/v1/artifacts/{sha256}", "open"),
        ("GET", "/api/v1/keys/release", "open"),
        ("PUT", "/api/v1/samples/{device_id}/{result_id}", "open"),
        ("POST", "/api/v1/enroll", "open"),
        ("GET", "/login", "open"),
        ("POST", "/login", "open"),
        ("GET", "/api/v1/devices", "viewer"),
        ("HEAD", "/api/v1/devices", "viewer"),  # HEAD reads like GET
        ("GET", "/api/v1/rollouts", "viewer"),
        ("GET", "/fleet", "viewer"),
        ("POST", "/logout", "viewer"),
        ("POST", "/api/v1/tokens", "viewer"),
        ("POST", "/api/v1/rollouts", "operator"),
        ("POST", "/api/v1/rollouts/{id}/{action}", "operator"),
        ("PATCH", "/api/v1/devices/{id}/tags", "operator"),
        ("PUT", "/api/v1/artifacts", "operator"),
        ("POST", "/api/v1/models/{name}/releases", "operator"),
        ("PUT", "/api/v1/results/{device_id}/{result_id}/feedback", "operator"),
        ("POST", "/api/v1/devices/{id}/commands", "operator"),
        ("POST", "/rollouts/{id}/{action}", "operator"),
        ("POST", "/api/v1/users", "admin"),
        ("GET", "/api/v1/audit", "admin"),
        ("DELETE", "/api/v1/data", "admin"),
        ("POST", "/api/v1/devices/{id}/revoke", "admin"),
        # deny by default: an unknown route, or a known route with another method
        ("POST", "/api/v1/something/new", "admin"),
        ("DELETE", "/api/v1/devices", "admin"),
        ("PUT", "/healthz", "admin"),
    ],
)
def test_policy_table(method: str, pattern: str, access: str) -> None:
    assert rule_for(method, pattern).access == access


def test_no_route_needs_a_login_and_unknown_routes_need_admin() -> None:
    assert rule_for("GET", None) is NO_ROUTE and NO_ROUTE.access == "viewer"
    assert rule_for("POST", "/api/v1/new") is DEFAULT and DEFAULT.access == "admin"


def test_only_token_creation_takes_a_password_and_only_sample_uploads_go_unaudited() -> None:
    assert [key for key, rule in POLICY.items() if rule.password] == [("POST", "/api/v1/tokens")]
    assert [key for key, rule in POLICY.items() if not rule.audit] == [
        ("PUT", "/api/v1/samples/{device_id}/{result_id}")
    ]
