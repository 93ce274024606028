"""Signed releases and desired states: what verifies, and every way a forgery must not."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from protocol.errors import InvalidMessage
from protocol.release import (
    DeploymentReport,
    Release,
    open_desired,
    open_release,
    seal_desired,
    seal_release,
)
from protocol.signing import (
    SignatureError,
    generate_private_key,
    key_id,
    private_key_from_pem,
    private_key_to_pem,
    public_key_from_text,
    public_key_text,
)

KEY = generate_private_key()
OTHER = generate_private_key()


def release(seq: int = 1, version: str = "1.0.0") -> Release:
    return Release.model_validate(
        {
            "name": "digits", "version": version, "seq": seq, "created_at": 1700000000.0,
            "inputs": [{"name": "input", "shape": [1, 8, 8, 1], "datatype": "FP32"}],
            "outputs": [{"name": "probabilities", "shape": [1, 10], "datatype": "FP32"}],
            "labels": [str(i) for i in range(10)],
            "artifacts": {"cpu": {"sha256": "ab" * 32, "size": 64932, "format": "tflite"}},
            "golden": [{"input": "aGVsbG8=", "expected_index": 2}],
        }
    )  # fmt: skip


def desired(generation: int = 5, device: str = "cam-1", sealed: Any = None) -> dict[str, Any]:
    return {
        "device_id": device, "generation": generation, "issued_at": 1700000001.0,
        "models": [{
            "model": "digits", "release": sealed or seal_release(KEY, release()),
            "target": "cpu", "artifact_url": "http://cp/api/v1/artifacts/" + "ab" * 32,
            "rollout_id": "r1",
        }],
    }  # fmt: skip


# -- keys ------------------------------------------------------------------------------------------


def test_keys_round_trip_as_text_and_pem() -> None:
    public = KEY.public_key()
    assert key_id(public_key_from_text(public_key_text(public))) == key_id(public)
    assert key_id(private_key_from_pem(private_key_to_pem(KEY)).public_key()) == key_id(public)
    for bad in ["rsa:AAAA", "ed25519:not-base64!", "ed25519:AAAA"]:
        with pytest.raises(SignatureError):
            public_key_from_text(bad)


# -- releases --------------------------------------------------------------------------------------


def test_a_sealed_release_verifies_after_any_reserialisation() -> None:
    sealed = seal_release(KEY, release())
    wire = json.loads(json.dumps(sealed, indent=3))  # another layout, the same values
    assert open_release(wire, KEY.public_key()).release == release()


@pytest.mark.parametrize(
    "tamper",
    [
        lambda r: r["artifacts"]["cpu"].update(sha256="cd" * 32),
        lambda r: r["artifacts"]["cpu"].update(size=1),
        lambda r: r.update(seq=99),
        lambda r: r.update(version="9.9.9"),
        lambda r: r["golden"][0].update(expected_index=3),
        lambda r: r["labels"].reverse(),
        lambda r: r.pop("golden"),
    ],
)
def test_a_tampered_release_is_refused(tamper: Any) -> None:
    sealed = seal_release(KEY, release())
    tamper(sealed["release"])
    with pytest.raises(SignatureError, match="tampered"):
        open_release(sealed, KEY.public_key())


def test_a_release_signed_by_another_key_is_refused() -> None:
    with pytest.raises(SignatureError, match="trusts key"):
        open_release(seal_release(OTHER, release()), KEY.public_key())
    forged = seal_release(OTHER, release())
    forged["signature"]["key_id"] = key_id(KEY.public_key())  # claims our key id
    with pytest.raises(SignatureError, match="tampered"):
        open_release(forged, KEY.public_key())


def test_fields_added_by_a_newer_sender_still_verify() -> None:
    body = release().model_dump(mode="json")
    body["future_field"] = {"anything": [1, 2]}
    body["artifacts"]["cpu"]["signature_v2"] = "xyz"
    from protocol.signing import sign

    sealed = {"release": body, "signature": sign(KEY, body).model_dump(mode="json")}
    opened = open_release(sealed, KEY.public_key())
    assert opened.release.seq == 1 and not hasattr(opened.release, "future_field")
    body["future_field"] = "changed"  # the unknown field is covered by the signature too
    with pytest.raises(SignatureError):
        open_release(sealed, KEY.public_key())


@pytest.mark.parametrize(
    ("document", "error"),
    [
        ("not an object", InvalidMessage),
        ({"signature": {}}, InvalidMessage),
        ({"release": {}}, SignatureError),
        ({"release": {}, "signature": {"value": "x"}}, SignatureError),
    ],
)
def test_malformed_sealed_releases(document: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        open_release(document, KEY.public_key())


# -- desired states --------------------------------------------------------------------------------


def test_a_desired_state_round_trips() -> None:
    opened = open_desired(seal_desired(KEY, desired()), KEY.public_key())
    assert opened.device_id == "cam-1" and opened.generation == 5
    entry = opened.models[0]
    assert entry.release is not None and entry.release.release.version == "1.0.0"
    assert entry.target == "cpu" and not entry.rollback


def test_a_replayed_document_keeps_its_old_generation() -> None:
    """A replay verifies, but it carries its own (old) generation, which the device compares
    with the highest it accepted; raising the generation breaks the signature."""
    old = seal_desired(KEY, desired(generation=3))
    assert open_desired(old, KEY.public_key()).generation == 3
    raised = json.loads(old)
    raised["desired"]["generation"] = 10
    with pytest.raises(SignatureError, match="tampered"):
        open_desired(json.dumps(raised).encode(), KEY.public_key())


def test_a_document_moved_to_another_device_is_refused() -> None:
    doc = json.loads(seal_desired(KEY, desired(device="cam-1")))
    doc["desired"]["device_id"] = "cam-2"
    with pytest.raises(SignatureError):
        open_desired(json.dumps(doc).encode(), KEY.public_key())


def test_an_old_release_swapped_into_a_valid_document_is_refused() -> None:
    """Swap a (validly signed) older release into a new document: the outer signature fails."""
    doc = json.loads(
        seal_desired(KEY, desired(sealed=seal_release(KEY, release(seq=2, version="2"))))
    )
    doc["desired"]["models"][0]["release"] = seal_release(KEY, release(seq=1))
    with pytest.raises(SignatureError, match="tampered"):
        open_desired(json.dumps(doc).encode(), KEY.public_key())


def test_a_forged_release_inside_a_signed_document_is_refused() -> None:
    """A document signed by the real key around a release signed by another: refused, naming
    the model."""
    forged = seal_release(OTHER, release())
    payload = seal_desired(KEY, desired(sealed=forged))
    with pytest.raises(SignatureError, match="release of 'digits'"):
        open_desired(payload, KEY.public_key())
    tampered = copy.deepcopy(seal_release(KEY, release()))
    tampered["release"]["artifacts"]["cpu"]["sha256"] = "cd" * 32
    with pytest.raises(SignatureError, match="release of 'digits'"):
        open_desired(seal_desired(KEY, desired(sealed=tampered)), KEY.public_key())


def test_a_desired_state_signed_by_another_key_is_refused() -> None:
    with pytest.raises(SignatureError, match="trusts key"):
        open_desired(seal_desired(OTHER, desired()), KEY.public_key())


@pytest.mark.parametrize("payload", [b"{", b"[]", b'{"desired": 1}'])
def test_garbage_desired_payloads(payload: bytes) -> None:
    with pytest.raises(InvalidMessage):
        open_desired(payload, KEY.public_key())


def test_seal_desired_refuses_a_document_a_device_could_not_read() -> None:
    with pytest.raises(InvalidMessage, match="generation"):
        seal_desired(KEY, desired(generation=0))


def test_deployment_reports_ignore_unknown_fields() -> None:
    report = DeploymentReport.model_validate(
        {"device_id": "cam-1", "generation": 5, "model": "digits", "state": "active",
         "smoke": {"passed": 3, "total": 3, "new_thing": 1}, "later": True}
    )  # fmt: skip
    assert report.state == "active" and report.smoke is not None and report.smoke.passed == 3
