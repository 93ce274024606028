"""Which names may be put in a certificate: a table of names and verdicts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from provisioning.ca import FleetCA, new_key
from provisioning.errors import InvalidName
from provisioning.names import (
    check_device_id,
    check_service_name,
    device_name_problem,
    host_problem,
    service_name_problem,
)

DEVICE_IDS = [
    ("cam-1", True),
    ("A.b_c-9", True),
    ("x" * 64, True),
    ("x" * 65, False),  # too long
    ("", False),
    ("+", False),
    ("#", False),
    ("a/b", False),
    ("a+b", False),
    ("cam#1", False),
    ("$SYS", False),
    ("a b", False),
    ("a\nuser admin", False),  # would inject an ACL line
    ("é", False),
    ("edgefleet-controlplane", False),  # a service's name: reserved
    ("Edgefleet-broker", False),
    ("edgefleet", True),  # only the prefix with its dash is reserved
]


@pytest.mark.parametrize(("name", "allowed"), DEVICE_IDS)
def test_device_names(name: str, allowed: bool) -> None:
    assert (device_name_problem(name) is None) is allowed
    if allowed:
        assert check_device_id(name) == name
    else:
        with pytest.raises(InvalidName, match="invalid device id"):
            check_device_id(name)


def test_a_device_id_must_be_a_string() -> None:
    assert device_name_problem(3) == "a device id is a string, not int"


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("edgefleet-controlplane", True),
        ("edgefleet-cp-2", True),
        ("edgefleet-", False),
        ("controlplane", False),
        ("edgefleet-+", False),
        ("edgefleet-a/b", False),
    ],
)
def test_service_names(name: str, allowed: bool) -> None:
    assert (service_name_problem(name) is None) is allowed
    if not allowed:
        with pytest.raises(InvalidName):
            check_service_name(name)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("localhost", True), ("broker.example.com", True), ("10.0.0.5", True), ("::1", True),
     ("", False), ("a b", False), ("a/b", False), ("x" * 254, False)],
)  # fmt: skip
def test_hosts(host: str, allowed: bool) -> None:
    assert (host_problem(host) is None) is allowed


@pytest.mark.parametrize("name", ["+", "#", "a/b", "", "edgefleet-controlplane"])
def test_the_ca_will_not_issue_a_device_certificate_for_a_bad_name(
    tmp_path: Path, name: str
) -> None:
    ca = FleetCA.create(tmp_path / "ca")
    with pytest.raises(InvalidName):
        ca.issue_device(name, new_key().public_key(), dt.timedelta(days=1))
