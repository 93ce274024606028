"""The control plane's own TLS files, checked before it starts: the MQTT client certificate for an
``mqtts://`` broker and the HTTPS certificate of the API (``tls_cert_file``/``tls_key_file``).

A missing or unreadable file, or a key that does not match its certificate, is a
:class:`~controlplane.errors.ConfigError` naming the setting, at start, instead of a traceback
from inside the server or a client that retries for ever.
"""

from __future__ import annotations

import ssl
from typing import Any

from controlplane.errors import ConfigError
from controlplane.settings import Settings
from protocol.errors import MQTTError
from protocol.mqtt import BrokerURL
from protocol.mqtt.tls import tls_context


def check_tls_files(settings: Settings) -> None:
    """ConfigError when a configured TLS file cannot be used (see the module docstring)."""
    if BrokerURL.parse(settings.broker).tls:
        try:
            tls_context(settings.mqtt_tls)
        except MQTTError as exc:
            raise ConfigError(f"mqtt_ca_file/mqtt_cert_file/mqtt_key_file: {exc}") from None
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
        except (OSError, ssl.SSLError) as exc:
            why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise ConfigError(
                f"tls_cert_file/tls_key_file: cannot load {settings.tls_cert_file} with "
                f"{settings.tls_key_file}: {why}"
            ) from None


def https_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for HTTPS, or none (plain HTTP)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return {}
    return {"ssl_certfile": str(settings.tls_cert_file), "ssl_keyfile": str(settings.tls_key_file)}


def scheme(settings: Settings) -> str:
    return "https" if settings.tls_cert_file is not None else "http"
