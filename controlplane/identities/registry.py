"""The identity registry's SQL: functions of a connection, run by the store in one transaction
each (``Store.transact``, on the writer thread) or on a reader (``Store.read``).

The writer thread runs transactions one at a time, so a token read unused in one is unused when
the same transaction marks it used: of two concurrent enrollments with one token exactly one
wins. The ``WHERE used_at IS NULL`` guard on the update says so again, in SQL.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from provisioning.ca import Revoked, serial_hex
from provisioning.enrollment import TokenRow, check_token
from provisioning.errors import DeviceRevoked, TokenUsed

CRL_GRACE_S = 86400.0
"""A revoked certificate stays in the CRL until a day after it expires (an expired one is refused
by its date anyway), so the CRL does not grow without end."""


def revoked_at(conn: sqlite3.Connection, device_id: str) -> float | None:
    row = conn.execute(
        "SELECT revoked_at FROM revoked_devices WHERE device_id = ?", [device_id]
    ).fetchone()
    return None if row is None else float(row[0])


def ensure_not_revoked(conn: sqlite3.Connection, device_id: str) -> None:
    """DeviceRevoked when ``device_id`` is revoked: a revoked id never gets a certificate again."""
    when = revoked_at(conn, device_id)
    if when is not None:
        moment = dt.datetime.fromtimestamp(when, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        raise DeviceRevoked(
            f"device {device_id!r} was revoked at {moment}: it gets no new certificate "
            "(provision the device under a new id)"
        )


def add_token(
    conn: sqlite3.Connection, token_hash: str, device_id: str, now: float, expires_at: float
) -> None:
    ensure_not_revoked(conn, device_id)
    conn.execute(
        "INSERT INTO enrollment_tokens (token_hash, device_id, created_at, expires_at) "
        "VALUES (?, ?, ?, ?)",
        [token_hash, device_id, now, expires_at],
    )


def token_device(conn: sqlite3.Connection, token_hash: str, now: float) -> str:
    """The device id of a token that works now; the TokenRefused saying why it does not."""
    row = conn.execute(
        "SELECT device_id, expires_at, used_at FROM enrollment_tokens WHERE token_hash = ?",
        [token_hash],
    ).fetchone()
    stored = None if row is None else TokenRow(row[0], float(row[1]), row[2])
    return check_token(stored, now)


def use_token(conn: sqlite3.Connection, token_hash: str, now: float) -> None:
    changed = conn.execute(
        "UPDATE enrollment_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL",
        [now, token_hash],
    ).rowcount
    if changed != 1:
        raise TokenUsed("this enrollment token has already been used: a token works once")


def add_certificate(
    conn: sqlite3.Connection,
    cert: x509.Certificate,
    device_id: str,
    via: str,
    now: float,
    revoked: float | None = None,
) -> None:
    conn.execute(
        "INSERT INTO certificates (serial, device_id, via, issued_at, not_before, not_after, "
        "revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            serial_hex(cert.serial_number),
            device_id,
            via,
            now,
            cert.not_valid_before_utc.timestamp(),
            cert.not_valid_after_utc.timestamp(),
            revoked,
        ],
    )


def ensure_certificate_current(conn: sqlite3.Connection, cert: x509.Certificate) -> None:
    """DeviceRevoked when the certificate, or its device, is revoked, or unknown to the registry
    (issued by this CA but not recorded: a copy of the CA key was used elsewhere)."""
    serial = serial_hex(cert.serial_number)
    row = conn.execute(
        "SELECT device_id, revoked_at FROM certificates WHERE serial = ?", [serial]
    ).fetchone()
    if row is None:
        raise DeviceRevoked(f"certificate {serial} is not in the registry: it was not issued here")
    ensure_not_revoked(conn, row[0])
    if row[1] is not None:
        raise DeviceRevoked(f"certificate {serial} is revoked")


@dataclass(frozen=True)
class Standing:
    """What the registry says of a certificate a device signed a request with (judged by
    :func:`controlplane.auth.devices.judge`)."""

    device_revoked_at: float | None
    owner: str | None  # the device the serial was issued to; None: not issued here
    revoked_at: float | None
    current: str | None  # the device's newest certificate (renewals replace the older ones)


def standing(conn: sqlite3.Connection, device_id: str, serial: str) -> Standing:
    row = conn.execute(
        "SELECT device_id, revoked_at FROM certificates WHERE serial = ?", [serial]
    ).fetchone()
    newest = conn.execute(
        "SELECT serial FROM certificates WHERE device_id = ? AND via != 'cut' "
        "ORDER BY issued_at DESC, rowid DESC LIMIT 1",
        [device_id],
    ).fetchone()
    return Standing(
        revoked_at(conn, device_id),
        None if row is None else row[0],
        None if row is None else row[1],
        None if newest is None else newest[0],
    )


def revoke_device(
    conn: sqlite3.Connection, device_id: str, now: float, reason: str
) -> tuple[float, list[str]]:
    """Revoke the device and every certificate it holds; return when (the first revocation's
    time, if it was revoked before) and the serials revoked now. Idempotent."""
    conn.execute(
        "INSERT INTO revoked_devices (device_id, revoked_at, reason) VALUES (?, ?, ?) "
        "ON CONFLICT (device_id) DO NOTHING",
        [device_id, now, reason],
    )
    serials = [
        r[0]
        for r in conn.execute(
            "SELECT serial FROM certificates WHERE device_id = ? AND revoked_at IS NULL",
            [device_id],
        )
    ]
    conn.execute(
        "UPDATE certificates SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL",
        [now, device_id],
    )
    when = revoked_at(conn, device_id)
    assert when is not None
    return when, serials


def revoked_certificates(conn: sqlite3.Connection, now: float) -> list[Revoked]:
    """What the CRL lists: revoked certificates not long expired (see :data:`CRL_GRACE_S`)."""
    rows = conn.execute(
        "SELECT serial, revoked_at FROM certificates "
        "WHERE revoked_at IS NOT NULL AND not_after > ? ORDER BY serial",
        [now - CRL_GRACE_S],
    )
    return [
        Revoked(int(serial, 16), dt.datetime.fromtimestamp(when, dt.timezone.utc))
        for serial, when in rows
    ]


def identity(conn: sqlite3.Connection, device_id: str) -> dict[str, Any]:
    """A device's identity as the API shows it: revoked or not, and its certificates."""
    row = conn.execute(
        "SELECT revoked_at, reason FROM revoked_devices WHERE device_id = ?", [device_id]
    ).fetchone()
    certs = [
        {
            "serial": r[0], "via": r[1], "issued_at": r[2], "not_before": r[3],
            "not_after": r[4], "revoked_at": r[5],
        }
        for r in conn.execute(
            "SELECT serial, via, issued_at, not_before, not_after, revoked_at FROM certificates "
            "WHERE device_id = ? AND via != 'cut' ORDER BY issued_at",
            [device_id],
        )
    ]  # fmt: skip
    return {
        "device_id": device_id,
        "revoked": row is not None,
        "revoked_at": None if row is None else row[0],
        "revoked_reason": None if row is None else row[1],
        "certificates": certs,
    }
