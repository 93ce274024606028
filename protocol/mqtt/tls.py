"""TLS for ``mqtts://`` URLs: which CA to trust and which certificate to present.

:class:`TLSFiles` names the files; :func:`tls_context` turns them into an ``ssl.SSLContext`` that
checks the broker's certificate against ``ca_file`` (and its host name against the URL's) and, when
``cert_file`` and ``key_file`` are set, presents the client's certificate (mutual TLS: the
broker takes the certificate's CN as the username and the client id).

The client builds a fresh context for every connection, so a certificate renewed on disk is
presented from the next reconnect on without a restart. A file that is missing or does not parse
is an :class:`~protocol.errors.MQTTError` naming it, never an ``ssl`` or ``OSError``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import MQTTError


@dataclass(frozen=True)
class TLSFiles:
    """The PEM files of an ``mqtts://`` connection; None: the system's CAs / no client cert."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")


def tls_context(files: TLSFiles | None) -> ssl.SSLContext:
    """A client context for ``files`` (TLS 1.2 at least, the host name checked)."""
    files = files or TLSFiles()
    try:
        context = ssl.create_default_context(
            cafile=str(files.ca_file) if files.ca_file is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise MQTTError(f"cannot load the CA file {files.ca_file}: {_why(exc)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if files.cert_file is not None and files.key_file is not None:
        try:
            context.load_cert_chain(str(files.cert_file), str(files.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise MQTTError(
                f"cannot load the client certificate {files.cert_file} with the key "
                f"{files.key_file}: {_why(exc)}"
            ) from None
    return context


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
