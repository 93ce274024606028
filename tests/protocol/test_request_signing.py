"""Signed device requests, pure: the canonical string, the headers, and what verification
refuses (a tampered method, path, query, body, time or device, another key, a stale clock)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from protocol.request_signing import (
    CERTIFICATE_HEADER,
    DEVICE_HEADER,
    MAX_SKEW_S,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    RequestSignatureError,
    body_sha256,
    canonical_request,
    check_fresh,
    parse_signed,
    request_target,
    sign_request,
    verify_request,
)

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())
CERT = b"\x30\x82certificate-der"  # the signature does not cover it: the registry judges it
NOW = 1_767_225_600.0
BODY = b"\x89PNG input bytes"
TARGET = "/api/v1/samples/cam-1/r-1?model=digits&reason=low_confidence"


def test_the_canonical_request_is_six_lines() -> None:
    text = canonical_request("put", TARGET, 1767225600, body_sha256(b""), "cam-1")
    assert text.decode().split("\n") == [
        "edgefleet-request-v1",
        "PUT",
        TARGET,
        "1767225600",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "cam-1",
    ]


@pytest.mark.parametrize(
    ("method", "target", "device"),
    [
        ("GET\nX", "/a", "cam-1"),  # a line break would shift the lines
        ("GET", "/a\nb", "cam-1"),
        ("GET", "/a b", "cam-1"),
        ("GET", "a", "cam-1"),  # not a path
        ("GET", "/a", "cam\n1"),
        ("GET", "/a", "cam/1"),
    ],
)
def test_parts_that_could_forge_a_line_are_refused(method: str, target: str, device: str) -> None:
    with pytest.raises(ValueError):
        canonical_request(method, target, 1, body_sha256(b""), device)


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [("/a", "", "/a"), ("/a", "x=1&y=%20", "/a?x=1&y=%20"), ("/a%2Fb", "", "/a%2Fb")],
)
def test_the_target_is_the_path_and_query_as_sent(path: str, query: str, expected: str) -> None:
    assert request_target(path, query) == expected


def signed(**over: Any) -> dict[str, str]:
    args: dict[str, Any] = {
        "key": KEY, "certificate_der": CERT, "device_id": "cam-1", "method": "PUT",
        "target": TARGET, "body_digest": body_sha256(BODY), "now": NOW,
    }  # fmt: skip
    args.update(over)
    return sign_request(**args)


def test_headers_round_trip() -> None:
    headers = signed()
    assert headers[DEVICE_HEADER] == "cam-1" and headers[TIMESTAMP_HEADER] == "1767225600"
    parsed = parse_signed({k.lower(): v for k, v in headers.items()})  # any case
    assert parsed is not None
    assert parsed.device_id == "cam-1" and parsed.timestamp == 1767225600
    assert parsed.certificate == CERT
    verify_request(KEY.public_key(), parsed, "PUT", TARGET, body_sha256(BODY))


@pytest.mark.parametrize(
    ("what", "key", "method", "target", "body"),
    [
        ("another key", OTHER, "PUT", TARGET, BODY),
        ("another method", KEY, "POST", TARGET, BODY),
        ("another path", KEY, "PUT", TARGET.replace("cam-1", "cam-2"), BODY),
        ("another query", KEY, "PUT", TARGET.replace("low_confidence", "sampled"), BODY),
        ("no query", KEY, "PUT", TARGET.partition("?")[0], BODY),
        ("a tampered body", KEY, "PUT", TARGET, BODY + b"!"),
        ("an empty body", KEY, "PUT", TARGET, b""),
    ],
)
def test_verification_refuses_what_was_not_signed(
    what: str, key: ec.EllipticCurvePrivateKey, method: str, target: str, body: bytes
) -> None:
    parsed = parse_signed(signed())
    assert parsed is not None
    with pytest.raises(RequestSignatureError, match="does not verify"):
        verify_request(key.public_key(), parsed, method, target, body_sha256(body))


@pytest.mark.parametrize(
    ("header", "value"),
    [(TIMESTAMP_HEADER, "1767225601"), (DEVICE_HEADER, "cam-2")],
)
def test_a_changed_timestamp_or_device_does_not_verify(header: str, value: str) -> None:
    parsed = parse_signed({**signed(), header: value})
    assert parsed is not None
    with pytest.raises(RequestSignatureError, match="does not verify"):
        verify_request(KEY.public_key(), parsed, "PUT", TARGET, body_sha256(BODY))


def test_a_key_that_is_not_ec_is_refused() -> None:
    parsed = parse_signed(signed())
    assert parsed is not None
    with pytest.raises(RequestSignatureError, match="EC key"):
        verify_request(object(), parsed, "PUT", TARGET, body_sha256(BODY))


def test_no_headers_is_an_unsigned_request() -> None:
    assert parse_signed({"Content-Type": "image/png"}) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({SIGNATURE_HEADER: None}, "missing X-Edgefleet-Signature"),
        ({CERTIFICATE_HEADER: None, DEVICE_HEADER: None}, "missing X-Edgefleet-Device, X-Edg"),
        ({TIMESTAMP_HEADER: "1767225600.5"}, "expected Unix seconds"),
        ({TIMESTAMP_HEADER: "-5"}, "expected Unix seconds"),
        ({TIMESTAMP_HEADER: "9" * 13}, "expected Unix seconds"),
        ({DEVICE_HEADER: "cam/1"}, "invalid device id"),
        ({DEVICE_HEADER: "#"}, "invalid device id"),
        ({SIGNATURE_HEADER: "not base64!"}, "X-Edgefleet-Signature: not base64"),
        ({SIGNATURE_HEADER: ""}, "X-Edgefleet-Signature: empty"),
        ({SIGNATURE_HEADER: "A" * 400}, "longer than 256"),
        ({CERTIFICATE_HEADER: "A" * 9000}, "X-Edgefleet-Certificate: longer than"),
    ],
)
def test_malformed_headers_are_named(change: dict[str, str | None], message: str) -> None:
    headers = {**signed(), **change}
    present = {k: v for k, v in headers.items() if v is not None}
    with pytest.raises(RequestSignatureError, match=message):
        parse_signed(present)


@pytest.mark.parametrize(
    ("offset", "fresh"),
    [
        (0, True),
        (MAX_SKEW_S, True),
        (-MAX_SKEW_S, True),
        (MAX_SKEW_S + 1, False),  # signed in the future: a device clock ahead
        (-(MAX_SKEW_S + 1), False),  # a stale request (or a replay)
        (-86400, False),
    ],
)
def test_the_clock_skew_window(offset: float, fresh: bool) -> None:
    stamp = int(NOW + offset)
    if fresh:
        check_fresh(stamp, NOW)
    else:
        with pytest.raises(RequestSignatureError, match="check the device's clock"):
            check_fresh(stamp, NOW)


def test_the_signature_is_der_ecdsa_base64() -> None:
    raw = base64.b64decode(signed()[SIGNATURE_HEADER])
    assert raw[0] == 0x30  # a DER SEQUENCE (r, s)
