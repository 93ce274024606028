"""Telling the broker about a revocation, and cutting the revoked device's live session.

What Mosquitto 2.0.11 does, verified against the real broker (tests/provisioning/test_broker.py):

- ``SIGHUP`` makes it re-read the CRL (and the certificates and the ACL): from then on a revoked
  certificate fails the TLS handshake.
- A connection that is already open is *not* checked again: the revoked device stays connected
  and may go on publishing on its own topics until it disconnects by itself.

So a revocation here does three things: write the CRL, signal the broker (:func:`reload_broker`,
through the pid file Mosquitto writes, when the broker runs on this host), and cut the live
session (:func:`cut_session`). The cut uses MQTT's own session takeover: with
``use_username_as_clientid`` the client id is the certificate's CN, so a connection with a
one-off certificate for the same CN closes the device's connection (the broker sends it the will:
the device shows offline) and, with a clean start and no session expiry, discards its session.
The revoked device's reconnect then fails the handshake. A *canary*, a one-off certificate for the
reserved name ``edgefleet-crl-canary`` that is already in the new CRL, tells when the broker has
applied it (the signal is handled in the broker's next loop, not at once): until the canary is
refused, a takeover could be undone by the device reconnecting at once. The canary has its own
CN, so its tries never touch the device's session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import MQTTError, NotConnected
from protocol.mqtt import BrokerURL, MQTTClient, TLSFiles
from protocol.mqtt.tls import tls_context

log = logging.getLogger(__name__)

CANARY_TIMEOUT_S = 15.0
CANARY_CN = "edgefleet-crl-canary"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str


def reload_broker(pid_file: Path | None) -> Outcome:
    """Send SIGHUP to the broker whose pid is in ``pid_file``; say what happened."""
    manual = "reload the broker yourself (`systemctl reload mosquitto` or `kill -HUP PID`)"
    if pid_file is None:
        return Outcome(False, f"no broker_pid_file is set: {manual}")
    try:
        text = pid_file.read_text().strip()
    except OSError as exc:
        return Outcome(False, f"cannot read {pid_file}: {exc.strerror or exc}; {manual}")
    if not text.isdigit() or int(text) <= 1:
        return Outcome(False, f"{pid_file} does not hold a process id ({text[:20]!r}); {manual}")
    pid = int(text)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return Outcome(False, f"no process {pid} (from {pid_file}): is the broker running?")
    except PermissionError:
        return Outcome(False, f"not allowed to signal process {pid}; {manual}")
    return Outcome(True, f"SIGHUP sent to the broker (pid {pid})")


@dataclass(frozen=True)
class OneOff:
    """A certificate and key in PEM, for one connection."""

    cert_pem: bytes
    key_pem: bytes


async def cut_session(
    url: BrokerURL,
    ca_file: Path | None,
    device_id: str,
    canary: OneOff,
    takeover: OneOff,
    *,
    timeout: float = CANARY_TIMEOUT_S,
) -> Outcome:
    """Close ``device_id``'s live session once the broker refuses the canary (see the module)."""
    if not url.tls:
        return Outcome(False, f"the broker {url} is not mqtts://: there is no certificate to cut")
    with tempfile.TemporaryDirectory(prefix="edgefleet-cut-") as tmp:
        try:
            canary_files = _files(Path(tmp), "canary", canary, ca_file)
            takeover_files = _files(Path(tmp), "takeover", takeover, ca_file)
        except (OSError, MQTTError) as exc:
            return Outcome(False, f"cannot prepare the one-off certificates: {exc}")
        deadline = time.monotonic() + timeout
        while True:
            if not await _connects(url, CANARY_CN, canary_files, 1.5):
                break  # refused: the broker has the new CRL (or is away, and will read it)
            if time.monotonic() > deadline:
                return Outcome(
                    False,
                    f"the broker still accepts a revoked certificate after {timeout:g}s: it has "
                    "not re-read the CRL (reload it, then revoke again to cut the session)",
                )
            await asyncio.sleep(0.2)
        if await _connects(url, device_id, takeover_files, 5.0):
            return Outcome(True, "any live session was closed (taken over, then ended)")
    return Outcome(False, f"could not connect to {url} to take the session over")


async def _connects(url: BrokerURL, client_id: str, files: TLSFiles, timeout: float) -> bool:
    """Whether a clean v5 connection with ``files`` is accepted; it is closed again at once."""
    client = MQTTClient(
        url,
        client_id,
        protocol="5",
        ssl_context=tls_context(files),
        clean_start=True,
        session_expiry=0,
        reconnect_min=0.1,
        reconnect_max=0.5,
        connect_timeout=min(timeout, 5.0),
    )
    await client.start()
    try:
        await client.wait_connected(timeout)
        return True
    except NotConnected:
        return False
    finally:
        with contextlib.suppress(MQTTError):
            await client.stop()


def _files(directory: Path, name: str, one_off: OneOff, ca_file: Path | None) -> TLSFiles:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(one_off.cert_pem)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, one_off.key_pem)
    finally:
        os.close(fd)
    return TLSFiles(ca_file=ca_file, cert_file=cert, key_file=key)
