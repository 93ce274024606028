"""Renewing the device's certificate before it expires, in the running agent.

Once ``tls.renew_at`` of the certificate's life is over (2/3 by default) the agent makes a new
key, and posts its current certificate, a CSR for the new key and a signature over that CSR by the
current key to ``POST {tls.renew_url}/api/v1/enroll/renew`` (:mod:`protocol.enrollment`). The new
key and certificate replace the old ones on disk; the MQTT client presents them from its next
connection on (the broker does not check a live connection's certificate again, so the current
one is not cut). A refusal (401/403: the device is revoked, or its certificate expired while it
was off) is logged as an error and retried rarely; anything else is retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from agent.config import AgentSettings
from agent.errors import AgentError
from agent.identity.client import EnrollError, post
from agent.identity.files import read_certificate, read_key, write_file, write_key
from protocol.enrollment import (
    IssuedCertificate,
    build_csr,
    new_device_key,
    renew_at,
    sign_renewal,
)

log = logging.getLogger(__name__)

MAX_SLEEP_S = 3600.0
"""The longest the renewer sleeps before it looks at the certificate on disk again."""
RETRY_MIN_S = 5.0
REFUSED_RETRY_S = 3600.0


def seconds_until_due(not_before: float, not_after: float, share: float, now: float) -> float:
    """How long until renewal (0 when due), never more than :data:`MAX_SLEEP_S`."""
    return max(0.0, min(MAX_SLEEP_S, renew_at(not_before, not_after, share) - now))


def retry_delay(failures: int, refused: bool, rand: float) -> float:
    """The pause after ``failures`` failed renewals (1-based): long after a refusal, else
    jittered exponential backoff from 5 s up to an hour."""
    if refused:
        return REFUSED_RETRY_S
    ceiling = min(MAX_SLEEP_S, RETRY_MIN_S * 2.0 ** min(failures, 20))
    return RETRY_MIN_S + rand * (ceiling - RETRY_MIN_S)


class Renewer:
    """Keeps ``tls.cert_file`` fresh; :meth:`run` until cancelled, :meth:`renew` once."""

    def __init__(self, settings: AgentSettings, clock: Callable[[], float] = time.time) -> None:
        tls = settings.tls
        if tls.renew_url is None or tls.cert_file is None or tls.key_file is None:
            raise AgentError("renewal needs tls.renew_url, tls.cert_file and tls.key_file")
        self.settings = settings
        self.url = tls.renew_url
        self.cert_file, self.key_file = tls.cert_file, tls.key_file
        self.clock = clock
        self.renewals = 0

    async def renew(self) -> IssuedCertificate:
        """Renew now: a new key, the certificate for it, both written in place."""
        current_key = read_key(self.key_file)
        current = self.cert_file.read_text()
        key = new_device_key()
        csr = build_csr(self.settings.device_id, key)
        body = {"certificate": current, "csr": csr, "signature": sign_renewal(current_key, csr)}
        issued = await post(self.url, "/api/v1/enroll/renew", body, self.settings.tls.ca_file)
        if issued.device_id != self.settings.device_id:
            raise AgentError(f"the control plane renewed the certificate of {issued.device_id!r}")
        write_key(self.key_file, key)
        write_file(self.cert_file, issued.certificate.encode(), 0o644)
        self.renewals += 1
        log.info("certificate renewed: %s, valid until %.0f", issued.serial, issued.not_after)
        return issued

    async def run(self) -> None:
        failures = 0
        while True:
            cert = read_certificate(self.cert_file)
            wait = seconds_until_due(
                cert.not_valid_before_utc.timestamp(),
                cert.not_valid_after_utc.timestamp(),
                self.settings.tls.renew_at,
                self.clock(),
            )
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            try:
                await self.renew()
                failures = 0
            except AgentError as exc:
                failures += 1
                refused = isinstance(exc, EnrollError) and exc.status in (401, 403)
                delay = retry_delay(failures, refused, random.random())
                level = logging.ERROR if refused else logging.WARNING
                log.log(level, "certificate renewal failed (retry in %.0fs): %s", delay, exc)
                await asyncio.sleep(delay)
