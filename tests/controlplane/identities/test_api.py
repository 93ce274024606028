"""Enrollment, renewal, tokens and revocation through the API, in process, on a real store and a
real CA directory (the broker's part of a revocation is in tests/e2e/test_enrollment.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.app import create_app
from controlplane.identities.service import Identities
from controlplane.records import Incoming
from controlplane.settings import Settings
from controlplane.store import Store
from protocol.enrollment import build_csr, new_device_key, sign_renewal
from provisioning import pki
from provisioning.ca import FleetCA
from provisioning.files import cert_pem
from tests.controlplane import messages as m
from tests.controlplane.auth_helpers import authorize


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def layout(tmp_path: Path) -> pki.Layout:
    return pki.init(tmp_path / "pki", persistence=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client(
    tmp_path: Path, store: Store, layout: pki.Layout, clock: Clock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        broker="mqtt://127.0.0.1:1",
        data_dir=tmp_path / "cp",
        pki_dir=layout.root,
        device_cert_lifetime_s=3600,
    )
    app = create_app(settings, store=store, mqtt=False)
    identities: Identities = app.state.identities
    identities.clock = clock
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with authorize(httpx.AsyncClient(transport=transport, base_url="http://cp"), store) as c:
        yield c


def refused(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]
    for word in words:
        assert word in message, (word, message)
    return message


async def token_for(client: httpx.AsyncClient, device_id: str, ttl_s: float = 600) -> str:
    response = await client.post(
        "/api/v1/enroll/tokens", json={"device_id": device_id, "ttl_s": ttl_s}
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def enroll(
    client: httpx.AsyncClient, device_id: str
) -> tuple[ec.EllipticCurvePrivateKey, dict[str, Any]]:
    key = new_device_key()
    token = await token_for(client, device_id)
    response = await client.post(
        "/api/v1/enroll", json={"token": token, "csr": build_csr(device_id, key)}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return key, body


async def test_enroll_issues_a_certificate_for_the_tokens_device(
    client: httpx.AsyncClient, layout: pki.Layout
) -> None:
    key, body = await enroll(client, "cam-1")
    cert = x509.load_pem_x509_certificate(body["certificate"].encode())
    ca = x509.load_pem_x509_certificate(layout.ca_file.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=cam-1"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    assert body["chain"] == body["certificate"] + body["ca"]
    assert 3600 <= body["not_after"] - body["not_before"] <= 3600 + 360  # lifetime setting
    identity = (await client.get("/api/v1/devices/cam-1/identity")).json()
    assert identity["revoked"] is False
    assert [c["serial"] for c in identity["certificates"]] == [body["serial"]]
    assert identity["certificates"][0]["via"] == "enroll"


async def test_a_token_works_once(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    token = await token_for(client, "cam-1")
    body = {"token": token, "csr": build_csr("cam-1", new_device_key())}
    assert (await client.post("/api/v1/enroll", json=body)).status_code == 200
    again = await client.post("/api/v1/enroll", json=body)
    refused(again, 403, "already been used")
    unknown = {**body, "token": "eft_" + "x" * 43}
    refused(await client.post("/api/v1/enroll", json=unknown), 401, "unknown enrollment token")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # refusals, not failures
    assert token not in caplog.text  # a credential is never logged


async def test_an_expired_token_is_refused(client: httpx.AsyncClient, clock: Clock) -> None:
    token = await token_for(client, "cam-1", ttl_s=60)
    clock.now += 61
    response = await client.post(
        "/api/v1/enroll", json={"token": token, "csr": build_csr("cam-1", new_device_key())}
    )
    refused(response, 401, "expired")


async def test_of_concurrent_uses_of_a_token_exactly_one_wins(client: httpx.AsyncClient) -> None:
    token = await token_for(client, "cam-1")
    bodies = [{"token": token, "csr": build_csr("cam-1", new_device_key())} for _ in range(12)]
    answers = await asyncio.gather(*(client.post("/api/v1/enroll", json=b) for b in bodies))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [403] * 11, [a.text for a in answers]


async def test_a_csr_naming_another_device_is_refused_and_keeps_the_token(
    client: httpx.AsyncClient,
) -> None:
    token = await token_for(client, "cam-1")
    forged = {"token": token, "csr": build_csr("cam-2", new_device_key())}
    refused(await client.post("/api/v1/enroll", json=forged), 403, "'cam-2'", "'cam-1'")
    honest = {"token": token, "csr": build_csr("cam-1", new_device_key())}
    assert (await client.post("/api/v1/enroll", json=honest)).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"not json", 400, ("JSON",)),
        (b"[]", 400, ("JSON object",)),
        (b'{"token": "x"}', 400, ("csr",)),
        (b'{"token": "x", "csr": "garbage"}', 400, ("not a PEM",)),
    ],
)
async def test_a_malformed_enrollment_is_a_400(
    client: httpx.AsyncClient, body: bytes, status: int, words: tuple[str, ...]
) -> None:
    response = await client.post(
        "/api/v1/enroll", content=body, headers={"content-type": "application/json"}
    )
    refused(response, status, *words)


@pytest.mark.parametrize("device_id", ["+", "#", "a b", "edgefleet-controlplane"])
async def test_no_token_for_a_name_outside_the_allowed_set(
    client: httpx.AsyncClient, device_id: str
) -> None:
    response = await client.post("/api/v1/enroll/tokens", json={"device_id": device_id})
    refused(response, 400, "invalid device id")


async def renew(
    client: httpx.AsyncClient,
    cert: str,
    key: ec.EllipticCurvePrivateKey,
    device_id: str = "cam-1",
) -> tuple[httpx.Response, ec.EllipticCurvePrivateKey]:
    new = new_device_key()
    csr = build_csr(device_id, new)
    body = {"certificate": cert, "csr": csr, "signature": sign_renewal(key, csr)}
    return await client.post("/api/v1/enroll/renew", json=body), new


async def test_renewal_gives_a_new_certificate_for_a_new_key(client: httpx.AsyncClient) -> None:
    key, first = await enroll(client, "cam-1")
    response, new_key = await renew(client, first["certificate"], key)
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["serial"] != first["serial"] and second["device_id"] == "cam-1"
    cert = x509.load_pem_x509_certificate(second["certificate"].encode())
    assert cert.public_key().public_numbers() == new_key.public_key().public_numbers()  # type: ignore[union-attr]
    # and the renewed certificate renews in turn
    third, _ = await renew(client, second["certificate"], new_key)
    assert third.status_code == 200, third.text


async def test_renewal_needs_the_current_key(client: httpx.AsyncClient) -> None:
    _, body = await enroll(client, "cam-1")
    response, _ = await renew(client, body["certificate"], new_device_key())
    refused(response, 403, "not made by the current certificate's key")


async def test_renewal_refuses_a_csr_for_another_device(client: httpx.AsyncClient) -> None:
    key, body = await enroll(client, "cam-1")
    response, _ = await renew(client, body["certificate"], key, device_id="cam-2")
    refused(response, 403, "'cam-2'")


async def test_renewal_refuses_a_foreign_ca_and_an_expired_certificate(
    client: httpx.AsyncClient, tmp_path: Path, clock: Clock
) -> None:
    other = FleetCA.create(tmp_path / "other")
    key = new_device_key()
    foreign = cert_pem(other.issue_device("cam-1", key.public_key(), dt.timedelta(days=1)))
    response, _ = await renew(client, foreign.decode(), key)
    refused(response, 403, "not issued by this fleet's CA")
    key, body = await enroll(client, "cam-1")
    clock.now = body["not_after"] + 1
    response, _ = await renew(client, body["certificate"], key)
    refused(response, 403, "not valid now")


async def test_revocation_marks_the_device_and_lists_its_certificates_in_the_crl(
    client: httpx.AsyncClient, store: Store, layout: pki.Layout
) -> None:
    await store.write(Incoming("cam-1", time.time(), m.birth("cam-1")))
    key, body = await enroll(client, "cam-1")
    response = await client.post("/api/v1/devices/cam-1/revoke", json={"reason": "stolen"})
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["serials"] == [body["serial"]] and done["revoked"] is True
    assert done["broker_reloaded"] is False and "broker_pid_file" in done["broker"]
    assert done["session_cut"] is False
    crl = x509.load_pem_x509_crl(layout.crl_file.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(body["serial"], 16)) is not None
    devices = (await client.get("/api/v1/devices")).json()["devices"]
    assert [(d["id"], d["revoked"]) for d in devices] == [("cam-1", True)]
    assert (await client.get("/api/v1/devices/cam-1")).json()["revoked"] is True
    identity = (await client.get("/api/v1/devices/cam-1/identity")).json()
    assert identity["revoked"] and identity["revoked_reason"] == "stolen"
    # a revoked device gets nothing more: no renewal, no token, no certificate
    response, _ = await renew(client, body["certificate"], key)
    refused(response, 403, "revoked")
    refused(await client.post("/api/v1/enroll/tokens", json={"device_id": "cam-1"}), 403, "revoked")
    csr = {"csr": build_csr("cam-1", new_device_key())}
    refused(await client.post("/api/v1/devices/cam-1/certificate", json=csr), 403, "revoked")
    # revoking again is harmless
    again = await client.post("/api/v1/devices/cam-1/revoke", json={})
    assert again.status_code == 200 and again.json()["revoked_at"] == done["revoked_at"]


async def test_a_token_issued_before_revocation_no_longer_enrolls(
    client: httpx.AsyncClient,
) -> None:
    token = await token_for(client, "cam-1")
    assert (await client.post("/api/v1/devices/cam-1/revoke", json={})).status_code == 200
    response = await client.post(
        "/api/v1/enroll", json={"token": token, "csr": build_csr("cam-1", new_device_key())}
    )
    refused(response, 403, "revoked")


async def test_an_operator_certificate_and_the_ca(
    client: httpx.AsyncClient, layout: pki.Layout
) -> None:
    csr = {"csr": build_csr("cam-9", new_device_key())}
    response = await client.post("/api/v1/devices/cam-9/certificate", json=csr)
    assert response.status_code == 201, response.text
    refused(await client.post("/api/v1/devices/cam-8/certificate", json=csr), 403, "'cam-9'")
    ca = (await client.get("/api/v1/pki/ca")).json()["ca"]
    assert ca == layout.ca_file.read_text()


async def test_without_pki_dir_the_routes_answer_503(tmp_path: Path, store: Store) -> None:
    settings = Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path)
    app = create_app(settings, store=store, mqtt=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://cp") as c:
        response = await c.post("/api/v1/enroll", json={"token": "x", "csr": "y"})
    refused(response, 503, "--pki-dir")


async def test_a_fresh_crl_is_written_at_start(tmp_path: Path, layout: pki.Layout) -> None:
    """OpenSSL refuses every client once the CRL's nextUpdate has passed: each start renews it."""
    before = x509.load_pem_x509_crl(layout.crl_file.read_bytes()).last_update_utc
    settings = Settings(broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "cp", pki_dir=layout.root)
    app = create_app(settings, mqtt=False)
    await asyncio.sleep(1.1)  # the CRL's times have a resolution of one second
    async with app.router.lifespan_context(app):
        pass
    after = x509.load_pem_x509_crl(layout.crl_file.read_bytes()).last_update_utc
    assert after > before
