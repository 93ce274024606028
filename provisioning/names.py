"""Which names may be put in a certificate (pure functions, table-tested).

A certificate's common name is its holder's MQTT username and client id on the broker
(``use_identity_as_username``, ``use_username_as_clientid``) and is substituted for ``%u`` in the
ACL's ``pattern`` lines. A device certificate's CN is therefore a topic segment, and must never
widen a topic filter or an ACL line: it is exactly :func:`protocol.topics.validate_device_id`'s set
(1 to 64 of ``A-Z a-z 0-9 _ . -``), so never ``+``, ``#``, ``/``, ``$``, a space, a newline (which
would inject an ACL line) or the empty string.

Service identities (the broker, the control plane) are named ``edgefleet-...``. That prefix is
reserved: a device named ``edgefleet-controlplane`` would get the control plane's ACL rights, so no
device certificate may carry it.
"""

from __future__ import annotations

from protocol.errors import InvalidDeviceId
from protocol.topics import validate_device_id
from provisioning.errors import InvalidName

SERVICE_PREFIX = "edgefleet-"
CONTROL_PLANE_CN = "edgefleet-controlplane"
BROKER_CN = "edgefleet-broker"
CA_CN = "edgefleet fleet CA"


def device_name_problem(name: object) -> str | None:
    """Why ``name`` may not be a device certificate's CN, or None when it may."""
    if not isinstance(name, str):
        return f"a device id is a string, not {type(name).__name__}"
    try:
        validate_device_id(name)
    except InvalidDeviceId as exc:
        return str(exc)
    if name.lower().startswith(SERVICE_PREFIX):
        return (
            f"invalid device id {name!r}: names starting with {SERVICE_PREFIX!r} are reserved "
            "for the broker and the control plane"
        )
    return None


def check_device_id(name: object) -> str:
    """``name`` unchanged when it may be a device's CN, else :class:`InvalidName` saying why."""
    problem = device_name_problem(name)
    if problem is not None:
        raise InvalidName(problem)
    assert isinstance(name, str)
    return name


def service_name_problem(name: object) -> str | None:
    """Why ``name`` may not be a service identity's CN (``edgefleet-...``), or None."""
    if not isinstance(name, str):
        return f"a service name is a string, not {type(name).__name__}"
    try:
        validate_device_id(name)
    except InvalidDeviceId:
        return f"invalid service name {name!r}: use 1 to 64 characters from A-Z a-z 0-9 _ . -"
    if not name.startswith(SERVICE_PREFIX) or name == SERVICE_PREFIX:
        return f"invalid service name {name!r}: it must start with {SERVICE_PREFIX!r}"
    return None


def check_service_name(name: object) -> str:
    """``name`` unchanged when it may name a service identity, else :class:`InvalidName`."""
    problem = service_name_problem(name)
    if problem is not None:
        raise InvalidName(problem)
    assert isinstance(name, str)
    return name


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be a server certificate's subject alternative name, or None."""
    if not host or len(host) > 253:
        return f"invalid host {host!r}: expected a DNS name or an IP address"
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:*")
    if any(c not in allowed for c in host):
        return f"invalid host {host!r}: expected a DNS name or an IP address"
    return None
