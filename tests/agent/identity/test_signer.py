"""The agent's signed HTTP calls against a real control plane (uvicorn on a free port, a real
store and CA, ``device_auth = required``): the deployer's download (resumed with ``Range``) and
the uploader pass while the device is enrolled and are refused once it is revoked; a renewed
certificate signs from the next request on, even when it lands between two requests."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from yarl import URL

from agent.deploy import DownloadError
from agent.deploy.download import download
from agent.identity import signer
from agent.identity.files import read_key, write_file, write_key
from agent.identity.signer import RequestSigner, SigningError
from agent.samples.store import KeptInput, SampleSpool
from agent.samples.uploader import Uploader, outcome
from controlplane.settings import Settings
from protocol.enrollment import build_csr, new_device_key, sign_renewal
from provisioning import pki
from tests.live import headers, live_control_plane

ROOT = Path(__file__).resolve().parents[3]
MODEL = (ROOT / "models" / "digits" / "edge_fp32.tflite").read_bytes()
SHA256 = hashlib.sha256(MODEL).hexdigest()
PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 40


@dataclass
class ControlPlane:
    url: str

    def post(self, path: str, body: dict[str, object]) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=headers(), timeout=10)

    def issue(self, device_id: str, key: ec.EllipticCurvePrivateKey) -> str:
        """A certificate for ``key`` (as ``edgefleet provision device`` gets one)."""
        made = self.post(
            f"/api/v1/devices/{device_id}/certificate", {"csr": build_csr(device_id, key)}
        )
        assert made.status_code == 201, made.text
        certificate: str = made.json()["certificate"]
        return certificate


@pytest.fixture
def control_plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    layout = pki.init(tmp_path / "pki", persistence=False)

    def settings(listen: str) -> Settings:
        return Settings(
            broker="mqtt://127.0.0.1:1", data_dir=tmp_path / "cp", listen=listen,
            pki_dir=layout.root, device_auth="required",
        )  # fmt: skip

    with live_control_plane(settings, monkeypatch) as url:
        pushed = httpx.put(url + "/api/v1/artifacts", content=MODEL, headers=headers(), timeout=30)
        assert pushed.status_code in (200, 201), pushed.text
        yield ControlPlane(url)


def identity(tmp_path: Path, cp: ControlPlane, device_id: str) -> RequestSigner:
    key = new_device_key()
    key_file, cert_file = tmp_path / "id" / "device.key", tmp_path / "id" / "device.pem"
    write_key(key_file, key)
    write_file(cert_file, cp.issue(device_id, key).encode(), 0o644)
    return RequestSigner(device_id, key_file, cert_file)


async def fetch(url: str, part: Path, sign: signer.Sign | None) -> str:
    """``download`` in a task whose context holds ``sign``, as the agent sets it up."""
    token = signer.current.set(sign)
    try:
        return (await asyncio.create_task(download(url, part, size=len(MODEL), attempts=1))).sha256
    finally:
        signer.current.reset(token)


async def upload(
    cp: ControlPlane, tmp_path: Path, sign: signer.Sign | None, rid: str
) -> int | None:
    spool = SampleSpool(tmp_path / f"samples-{rid}.db", max_rows=10, max_bytes=10_000)
    await spool.open()
    try:
        await spool.put(
            KeptInput(rid, "digits-edge", "1.0.0", "low_confidence", "image/png", 1.7e9, PNG)
        )
        uploader = Uploader(spool, base_url=cp.url, device_id="cam-1", sign=sign)
        async with aiohttp.ClientSession() as session:
            answer = await uploader.upload(session, (await spool.oldest(1))[0])
        return answer.status
    finally:
        await spool.close()


async def test_signed_calls_pass_until_the_device_is_revoked(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    cam = identity(tmp_path, control_plane, "cam-1")
    url = f"{control_plane.url}/api/v1/artifacts/{SHA256}"
    part = tmp_path / "model.part"
    part.write_bytes(MODEL[:1000])  # an interrupted download: the resume is signed too
    assert await fetch(url, part, cam.sign) == SHA256
    assert await upload(control_plane, tmp_path, cam.sign, "r-1") == 201
    # the same agent without its identity is refused (device_auth = required)
    with pytest.raises(DownloadError, match="HTTP 401"):
        await fetch(url, tmp_path / "unsigned.part", None)
    assert await upload(control_plane, tmp_path, None, "r-2") == 401

    revoked = control_plane.post("/api/v1/devices/cam-1/revoke", {"reason": "stolen"})
    assert revoked.status_code == 200, revoked.text
    with pytest.raises(DownloadError, match="HTTP 403.*device cam-1 is revoked"):
        await fetch(url, tmp_path / "again.part", cam.sign)
    status = await upload(control_plane, tmp_path, cam.sign, "r-3")
    assert status == 403 and outcome(status) == "rejected"  # dropped: it would be refused again


async def test_a_renewed_certificate_signs_from_the_next_request_on(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    cam = identity(tmp_path, control_plane, "cam-1")
    url = f"{control_plane.url}/api/v1/artifacts/{SHA256}"
    assert await fetch(url, tmp_path / "a.part", cam.sign) == SHA256
    # a renewal, as agent/identity/renewal.py does it: the new key first, the certificate after
    key = new_device_key()
    csr = build_csr("cam-1", key)
    current = read_key(cam.key_file)
    renewed = control_plane.post("/api/v1/enroll/renew", {
        "certificate": cam.cert_file.read_text(), "csr": csr,
        "signature": sign_renewal(current, csr),
    })  # fmt: skip
    assert renewed.status_code == 200, renewed.text
    write_key(cam.key_file, key)
    later = threading.Timer(
        0.3, write_file, (cam.cert_file, renewed.json()["certificate"].encode(), 0o644)
    )
    later.start()
    try:
        # signed while the key and the certificate do not match yet: it waits for the certificate
        assert await fetch(url, tmp_path / "b.part", cam.sign) == SHA256
    finally:
        later.join()
    assert await upload(control_plane, tmp_path, cam.sign, "r-1") == 201


async def test_a_key_that_never_matches_its_certificate_is_an_error(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    cam = identity(tmp_path, control_plane, "cam-1")
    write_key(cam.key_file, new_device_key())
    cam.settle_s = 0.2
    with pytest.raises(SigningError, match="does not match the certificate"):
        await cam.sign("GET", URL(control_plane.url + "/api/v1/artifacts/x"))
    with pytest.raises(DownloadError, match="cannot sign the request"):
        await fetch(f"{control_plane.url}/api/v1/artifacts/{SHA256}", tmp_path / "c.part", cam.sign)
    assert await upload(control_plane, tmp_path, cam.sign, "r-1") is None  # retried later


def test_no_identity_no_signer(tmp_path: Path) -> None:
    from agent.config import AgentSettings

    plain = AgentSettings(device_id="cam-1", broker="mqtt://h:1", data_dir=tmp_path)
    assert RequestSigner.from_settings(plain) is None
    tls = {"cert_file": str(tmp_path / "d.pem"), "key_file": str(tmp_path / "d.key")}
    with_id = AgentSettings(device_id="cam-1", broker="mqtt://h:1", data_dir=tmp_path, tls=tls)
    made = RequestSigner.from_settings(with_id)
    assert made is not None and made.cert_file == tmp_path / "d.pem"
