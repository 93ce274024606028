"""Devices on their HTTP routes, in process on a real store and a real CA: signed downloads and
uploads pass, a revoked device is refused on both, unsigned requests are what ``device_auth``
says, nobody uploads as another device, and a renewal replaces the key that signs."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette

from controlplane.app import create_app
from controlplane.auth.devices import check_subject, judge, unsigned_access
from controlplane.errors import ConfigError
from controlplane.identities.registry import Standing
from controlplane.settings import Settings, load_settings
from controlplane.store import Store
from protocol.enrollment import build_csr, new_device_key, sign_renewal
from protocol.request_signing import (
    CERTIFICATE_HEADER,
    TIMESTAMP_HEADER,
    body_sha256,
    sign_request,
)
from provisioning import pki
from provisioning.ca import FleetCA, new_key
from tests.controlplane.auth_helpers import make_token

ROOT = Path(__file__).resolve().parents[3]
MODEL = (ROOT / "models" / "digits" / "edge_fp32.tflite").read_bytes()
PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 10
QUERY = "model=digits&model_version=1.0.0&reason=low_confidence&created_at=1700000000.5"


# -- decisions (pure) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "method", "access"),
    [
        ("optional", "GET", "open"),
        ("optional", "HEAD", "open"),
        ("optional", "PUT", "open"),
        ("required", "GET", "viewer"),  # an operator's CLI checks and downloads artifacts
        ("required", "HEAD", "viewer"),
        ("required", "PUT", None),  # only devices upload their inputs
        ("required", "POST", None),
    ],
)
def test_what_an_unsigned_request_needs(mode: Any, method: str, access: str | None) -> None:
    assert unsigned_access(mode, method) == access


@pytest.mark.parametrize(
    ("standing", "expected"),
    [
        (Standing(None, "cam-1", None, "aa"), None),
        (Standing(5.0, "cam-1", 5.0, "aa"), (403, "device cam-1 is revoked")),
        (Standing(5.0, None, None, None), (403, "device cam-1 is revoked")),
        (Standing(None, None, None, "bb"), (401, "not in the registry")),
        (Standing(None, "cam-2", None, "aa"), (401, "issued to cam-2")),
        (Standing(None, "cam-1", 7.0, "aa"), (403, "certificate aa of device cam-1 is revoked")),
        (Standing(None, "cam-1", None, "bb"), (401, "was replaced by bb")),
    ],
)
def test_what_the_registry_says(standing: Standing, expected: tuple[int, str] | None) -> None:
    verdict = judge(standing, "cam-1", "aa")
    if expected is None:
        assert verdict is None
    else:
        assert verdict is not None and verdict[0] == expected[0] and expected[1] in verdict[1]


@pytest.mark.parametrize(
    ("params", "refused"),
    [({}, False), ({"sha256": "ab"}, False), ({"device_id": "cam-1"}, False),
     ({"device_id": "cam-2"}, True)],
)  # fmt: skip
def test_a_device_acts_only_for_itself(params: dict[str, str], refused: bool) -> None:
    assert (check_subject(params, "cam-1") is not None) is refused


# -- in process ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Device:
    device_id: str
    key: ec.EllipticCurvePrivateKey
    cert_pem: str

    @property
    def der(self) -> bytes:
        cert = x509.load_pem_x509_certificate(self.cert_pem.encode())
        return cert.public_bytes(serialization.Encoding.DER)

    def sign(self, method: str, target: str, body: bytes, now: float) -> dict[str, str]:
        return sign_request(
            self.key, self.der, self.device_id, method, target, body_sha256(body), now
        )


@dataclass
class Fleet:
    app: Starlette
    http: httpx.AsyncClient  # no credentials
    admin: dict[str, str]
    viewer: dict[str, str]
    clock: Clock
    sha256: str

    async def device(self, device_id: str) -> Device:
        key = new_device_key()
        answer = await self.http.post(
            f"/api/v1/devices/{device_id}/certificate",
            json={"csr": build_csr(device_id, key)}, headers=self.admin,
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
        return Device(device_id, key, answer.json()["certificate"])

    async def download(
        self, device: Device | None, method: str = "GET", **headers: str
    ) -> httpx.Response:
        path = f"/api/v1/artifacts/{self.sha256}"
        signed = device.sign(method, path, b"", self.clock()) if device else {}
        return await self.http.request(method, path, headers={**signed, **headers})

    async def upload(
        self, device: Device | None, *, as_device: str | None = None, body: bytes = PNG,
        signed_body: bytes | None = None, result_id: str = "r-1",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:  # fmt: skip
        named = as_device or (device.device_id if device else "cam-1")
        target = f"/api/v1/samples/{named}/{result_id}?{QUERY}"
        signed = (
            device.sign("PUT", target, body if signed_body is None else signed_body, self.clock())
            if device
            else {}
        )
        return await self.http.put(
            target, content=body, headers={"Content-Type": "image/png", **signed, **(headers or {})}
        )


MakeFleet = Callable[..., Any]


@pytest.fixture
async def fleet_of(tmp_path: Path, store: Store) -> AsyncIterator[MakeFleet]:
    """``await fleet_of(device_auth=..., auth=...)``: an API-only app with a CA and an artifact."""
    layout = pki.init(tmp_path / "pki", persistence=False)
    clients: list[httpx.AsyncClient] = []

    async def make(**change: Any) -> Fleet:
        settings = Settings(
            broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "cp", pki_dir=layout.root,
            device_cert_lifetime_s=3600, max_sample_bytes=1000, **change,
        )  # fmt: skip
        app = create_app(settings, store=store, mqtt=False)
        clock = Clock()
        app.state.identities.clock = clock
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        http = httpx.AsyncClient(transport=transport, base_url="http://cp")
        clients.append(http)
        admin = {"Authorization": f"Bearer {make_token(store, 'admin', 'admin')}"}
        viewer = {"Authorization": f"Bearer {make_token(store, 'vic', 'viewer')}"}
        pushed = await http.put("/api/v1/artifacts", content=MODEL, headers=admin)
        assert pushed.status_code in (200, 201), pushed.text
        return Fleet(app, http, admin, viewer, clock, pushed.json()["sha256"])

    yield make
    for c in clients:
        await c.aclose()


def refused(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]
    for word in words:
        assert word in message, (word, message)
    return message


async def test_signed_downloads_and_uploads_pass(fleet_of: MakeFleet) -> None:
    fleet: Fleet = await fleet_of()
    cam = await fleet.device("cam-1")
    got = await fleet.download(cam)
    assert got.status_code == 200 and got.content == MODEL
    head = await fleet.download(cam, "HEAD")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(MODEL))
    part = await fleet.download(cam, Range="bytes=100-")  # a resume is signed too
    assert part.status_code == 206 and part.content == MODEL[100:]
    up = await fleet.upload(cam)
    assert up.status_code == 201, up.text
    # the body read ahead to check its hash reached the handler whole
    stored = await fleet.http.get("/api/v1/samples/cam-1/r-1", headers=fleet.admin)
    assert stored.status_code == 200 and stored.content == PNG


async def test_unsigned_requests_pass_when_signatures_are_optional(fleet_of: MakeFleet) -> None:
    fleet: Fleet = await fleet_of()
    assert (await fleet.download(None)).status_code == 200
    assert (await fleet.upload(None)).status_code == 201


async def test_a_revoked_device_is_refused_on_both_routes(fleet_of: MakeFleet) -> None:
    fleet: Fleet = await fleet_of()
    cam, other = await fleet.device("cam-1"), await fleet.device("cam-2")
    assert (await fleet.download(cam)).status_code == 200
    revoked = await fleet.http.post(
        "/api/v1/devices/cam-1/revoke", json={"reason": "stolen"}, headers=fleet.admin
    )
    assert revoked.status_code == 200, revoked.text
    refused(await fleet.download(cam), 403, "device cam-1 is revoked")
    assert (await fleet.download(cam, "HEAD")).status_code == 403
    refused(await fleet.upload(cam), 403, "device cam-1 is revoked")
    # the others go on
    assert (await fleet.download(other)).status_code == 200
    assert (await fleet.upload(other, result_id="r-2")).status_code == 201


async def test_a_device_cannot_upload_as_another(fleet_of: MakeFleet) -> None:
    fleet: Fleet = await fleet_of()
    cam = await fleet.device("cam-1")
    refused(await fleet.upload(cam, as_device="cam-2"), 403, "cam-1 may not act for device cam-2")
    missing = await fleet.http.get("/api/v1/samples/cam-2/r-1", headers=fleet.admin)
    assert missing.status_code == 404


async def test_what_does_not_verify_is_refused_401(fleet_of: MakeFleet, tmp_path: Path) -> None:
    fleet: Fleet = await fleet_of()
    cam = await fleet.device("cam-1")
    # a body other than the one signed
    refused(await fleet.upload(cam, signed_body=b"other"), 401, "does not verify")
    # another key than the certificate's
    thief = Device("cam-1", new_device_key(), cam.cert_pem)
    refused(await fleet.download(thief), 401, "does not verify")
    # a stale request (or a device clock far off)
    old = cam.sign("GET", f"/api/v1/artifacts/{fleet.sha256}", b"", fleet.clock() - 301)
    answer = await fleet.http.get(f"/api/v1/artifacts/{fleet.sha256}", headers=old)
    refused(answer, 401, "s behind the control plane's clock", "check the device's clock")
    # a certificate from another CA, for the same id
    ca = FleetCA.create(tmp_path / "other-ca")
    key = new_key()
    foreign = ca.issue_device("cam-1", key.public_key(), dt.timedelta(days=1))
    forger = Device("cam-1", key, foreign.public_bytes(serialization.Encoding.PEM).decode())
    refused(await fleet.download(forger), 401, "not issued by this fleet's CA")
    # the certificate of one device, the id of another
    liar = cam.sign("GET", f"/api/v1/artifacts/{fleet.sha256}", b"", fleet.clock())
    liar["X-Edgefleet-Device"] = "cam-2"
    answer = await fleet.http.get(f"/api/v1/artifacts/{fleet.sha256}", headers=liar)
    refused(answer, 401, "device cam-1's, but the request says cam-2")
    # half the headers
    half = {TIMESTAMP_HEADER: str(int(fleet.clock()))}
    refused(await fleet.download(None, **half), 401, "missing X-Edgefleet-Device")
    refused(await fleet.download(cam, **{CERTIFICATE_HEADER: "AAAA"}), 401, "not a DER")


async def test_a_signed_body_larger_than_the_limit_is_refused_413(fleet_of: MakeFleet) -> None:
    fleet: Fleet = await fleet_of()
    cam = await fleet.device("cam-1")
    refused(await fleet.upload(cam, body=b"x" * 1001), 413, "max_sample_bytes (1000 bytes)")


async def test_a_renewal_replaces_the_key_that_signs(fleet_of: MakeFleet) -> None:
    fleet: Fleet = await fleet_of()
    cam = await fleet.device("cam-1")
    key = new_device_key()
    csr = build_csr("cam-1", key)
    renewed = await fleet.http.post("/api/v1/enroll/renew", json={
        "certificate": cam.cert_pem, "csr": csr, "signature": sign_renewal(cam.key, csr),
    })  # fmt: skip
    assert renewed.status_code == 200, renewed.text
    new = Device("cam-1", key, renewed.json()["certificate"])
    assert (await fleet.download(new)).status_code == 200
    assert (await fleet.upload(new)).status_code == 201
    # the old certificate is replaced for HTTP at once (the broker takes it until it expires)
    refused(await fleet.download(cam), 401, "was replaced by", renewed.json()["serial"])


async def test_required_refuses_unsigned_requests_but_lets_operators_read(
    fleet_of: MakeFleet,
) -> None:
    fleet: Fleet = await fleet_of(device_auth="required")
    refused(await fleet.download(None), 401, "device_auth = required")
    refused(await fleet.upload(None), 401, "device_auth = required")
    # an operator's token reads artifacts (the CLI's push checks them with HEAD)...
    assert (await fleet.download(None, **fleet.viewer)).status_code == 200
    assert (await fleet.download(None, "HEAD", **fleet.viewer)).status_code == 200
    # ... but files no input: that is a device's
    refused(await fleet.upload(None, headers=fleet.admin), 401, "device_auth = required")
    cam = await fleet.device("cam-1")
    assert (await fleet.download(cam)).status_code == 200
    assert (await fleet.upload(cam)).status_code == 201


async def test_devices_are_checked_with_operator_auth_off(fleet_of: MakeFleet) -> None:
    fleet: Fleet = await fleet_of(auth=False)
    cam = await fleet.device("cam-1")
    assert (await fleet.upload(cam)).status_code == 201
    await fleet.http.post("/api/v1/devices/cam-1/revoke", json={})
    refused(await fleet.download(cam), 403, "device cam-1 is revoked")


@pytest.mark.parametrize(
    "change",
    [{"device_auth": "required"}, {"device_auth": "required", "auth": False, "pki_dir": "pki"}],
)
def test_required_needs_a_ca_and_operator_auth(change: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="device_auth = required needs pki_dir"):
        load_settings(None, {"broker": "mqtt://h:1", "data_dir": str(tmp_path), **change})
    with pytest.raises(ConfigError, match="device_auth"):
        load_settings(None, {"broker": "mqtt://h:1", "data_dir": str(tmp_path),
                             "device_auth": "always"})  # fmt: skip
