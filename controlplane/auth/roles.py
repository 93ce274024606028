"""Roles and what each may do: pure decisions, no I/O.

The roles are ordered, each including the one below it::

    viewer < operator < admin

- ``viewer``: reads everything an operator sees (devices, results, releases, rollouts, alerts).
- ``operator``: also pushes releases, starts and steers rollouts, gives feedback, tags devices and
  sends device commands.
- ``admin``: also manages users and tokens of others, provisioning, keys, data deletion and the
  audit log: everything.

A route needs an :data:`Access`: one of the roles, or ``open`` (no credentials at all: health,
metrics and the routes devices call; see :mod:`controlplane.auth.policy`).
"""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["viewer", "operator", "admin"]
Access = Literal["open", "viewer", "operator", "admin"]

ROLES: tuple[Role, ...] = get_args(Role)
_RANK: dict[str, int] = {"open": -1, "viewer": 0, "operator": 1, "admin": 2}


class ScopeError(ValueError):
    """A token asked for a role its creator may not hand out (the message says why)."""


def parse_role(raw: str) -> Role:
    """``raw`` as a role, or ValueError naming the three."""
    for role in ROLES:
        if raw == role:
            return role
    raise ValueError(f"expected a role ({', '.join(ROLES)}), got {raw!r}")


def allows(role: Role | None, needed: Access) -> bool:
    """Whether ``role`` (None: no credentials) may use a route that needs ``needed``."""
    if needed == "open":
        return True
    return role is not None and _RANK[role] >= _RANK[needed]


def lowest(*roles: Role) -> Role:
    """The least of ``roles``: what a token of one role held by a user of another may do."""
    return min(roles, key=lambda r: _RANK[r])


def token_scope(creator: Role, owner: Role, requested: Role | None, *, for_self: bool) -> Role:
    """The role a new API token gets, or :class:`ScopeError`.

    ``creator`` is the role the request was made with (a viewer token cannot mint an admin token,
    even for an admin), ``owner`` the role of the user the token is for. Only an admin creates
    tokens for someone else. Without ``requested`` the token gets the most it may have.
    """
    if not for_self and creator != "admin":
        raise ScopeError("only an admin creates tokens for another user")
    ceiling = lowest(creator, owner)
    if requested is None:
        return ceiling
    if _RANK[requested] > _RANK[ceiling]:
        raise ScopeError(
            f"role {requested!r} is above {ceiling!r}, the most this token may have (a token "
            f"never has more rights than its creator, here {creator!r}, or its owner, {owner!r})"
        )
    return requested
