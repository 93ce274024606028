"""Signing the device's HTTP calls to the control plane (:mod:`protocol.request_signing`).

With an identity (``[tls]`` ``cert_file`` and ``key_file``: a bundle, or ``edgefleet-agent
enroll``), every artifact download (each ``Range`` resume too) and every kept-input upload carries
the device's id, a timestamp, its certificate and a signature by its key; the control plane
refuses them once the device is revoked (docs/security.md).

The key and the certificate are read again whenever either file changes, so a renewed
certificate (:mod:`agent.identity.renewal`) signs from the next request on. A renewal replaces
the key first and the certificate a moment later: while the two do not match, the signer waits
for the certificate (up to ``settle_s``) rather than sign with a key the control plane has no
certificate of.

Who signs: the uploader is handed :meth:`RequestSigner.sign`; the deployer's downloads read
:data:`current`, a context variable the agent sets while it starts its deployer, so the tasks of
each agent (the simulator runs many in one process) sign as their own device.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from yarl import URL

from agent.config import AgentSettings
from agent.errors import AgentError
from agent.identity.files import read_certificate, read_key
from protocol.request_signing import body_sha256, request_target, sign_request

Sign = Callable[[str, URL, bytes], Awaitable[dict[str, str]]]
"""``sign(method, url, body)``: the headers that sign this request."""

current: ContextVar[Sign | None] = ContextVar("edgefleet_request_signer", default=None)
"""The signer of the agent whose task this is (None: unsigned requests)."""

HASH_IN_THREAD = 256 * 1024
"""Bodies larger than this are hashed on a thread (the event loop serves inferences)."""


class SigningError(AgentError):
    """The device's key or certificate cannot be read, or they do not match."""


def target(url: URL) -> str:
    """The path and query of ``url`` as aiohttp sends them (percent-encoded)."""
    return request_target(url.raw_path or "/", url.raw_query_string)


class RequestSigner:
    def __init__(
        self,
        device_id: str,
        key_file: Path,
        cert_file: Path,
        *,
        clock: Callable[[], float] = time.time,
        settle_s: float = 1.0,
    ) -> None:
        self.device_id = device_id
        self.key_file = key_file
        self.cert_file = cert_file
        self.clock = clock
        self.settle_s = settle_s
        self._seen: tuple[tuple[int, int, int], ...] | None = None
        self._pair: tuple[ec.EllipticCurvePrivateKey, bytes] | None = None

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> RequestSigner | None:
        """The signer of the configured identity; None without ``[tls]`` cert and key files."""
        tls = settings.tls
        if tls.cert_file is None or tls.key_file is None:
            return None
        return cls(settings.device_id, tls.key_file, tls.cert_file)

    async def sign(self, method: str, url: URL, body: bytes = b"") -> dict[str, str]:
        """The headers that sign ``method url`` with ``body``; SigningError when the identity's
        files cannot be read or still do not match after ``settle_s``."""
        key, cert_der = await self._current()
        if len(body) > HASH_IN_THREAD:
            digest = await asyncio.to_thread(body_sha256, body)
        else:
            digest = body_sha256(body)
        try:
            return sign_request(
                key, cert_der, self.device_id, method, target(url), digest, self.clock()
            )
        except ValueError as exc:
            raise SigningError(f"cannot sign {method} {url}: {exc}") from None

    async def _current(self) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        deadline = time.monotonic() + self.settle_s
        while True:
            seen = self._stat()
            if seen == self._seen and self._pair is not None:
                return self._pair
            pair, why = self._load()
            if pair is not None:
                self._seen, self._pair = seen, pair
                return pair
            if time.monotonic() >= deadline:
                raise SigningError(why)
            await asyncio.sleep(0.05)  # a renewal between its two renames

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        try:
            return tuple(
                (s.st_ino, s.st_mtime_ns, s.st_size)
                for s in (os.stat(self.key_file), os.stat(self.cert_file))
            )
        except OSError as exc:
            raise SigningError(f"cannot read the device's identity: {exc}") from None

    def _load(self) -> tuple[tuple[ec.EllipticCurvePrivateKey, bytes] | None, str]:
        try:
            key, cert = read_key(self.key_file), read_certificate(self.cert_file)
        except AgentError as exc:
            return None, str(exc)
        mine = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        theirs = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if mine != theirs:
            return None, f"the key {self.key_file} does not match the certificate {self.cert_file}"
        return (key, cert.public_bytes(serialization.Encoding.DER)), ""
