"""The identity's files on the device: where they are, writing them safely, reading them back.

The key is written 0600 through a temporary file and a rename, so no one else can ever read it
and a power cut leaves the old key or the new one, never half of one. At renewal the key is
replaced before the certificate: between the two renames the MQTT client may find a key that does
not match the certificate, and it then retries its connection a moment later (protocol.mqtt).
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.config import AgentSettings
from agent.errors import ConfigError
from protocol import files
from protocol.mqtt import TLSFiles

IDENTITY_DIR = "identity"


def identity_paths(settings: AgentSettings) -> tuple[Path, Path, Path]:
    """(key, certificate, CA) files: the ``[tls]`` settings, else ``DATA_DIR/identity/``."""
    base = settings.data_dir / IDENTITY_DIR
    tls = settings.tls
    return (
        tls.key_file or base / "device.key",
        tls.cert_file or base / "device.pem",
        tls.ca_file or base / "ca.pem",
    )


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file and a rename; ConfigError naming the path on failure."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        files.write_atomic(path, data, mode)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_file(path, pem, 0o600)


def read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"cannot read the key {path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} is not an EC private key")
    return key


def read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read the certificate {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate") from None


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if len(names) == 1 else None
    return value if isinstance(value, str) else None


def check_identity(settings: AgentSettings) -> None:
    """ConfigError when the configured certificate names another device than ``device_id``:
    the broker would take its CN as the identity, and refuse every publish on our topics."""
    if settings.tls.cert_file is None:
        return
    cn = common_name(read_certificate(settings.tls.cert_file))
    if cn != settings.device_id:
        raise ConfigError(
            f"tls.cert_file {settings.tls.cert_file} is the certificate of {cn!r}, but device_id "
            f"is {settings.device_id!r}: the broker would refuse every publish"
        )


def mqtt_tls(settings: AgentSettings) -> TLSFiles:
    """The files an ``mqtts://`` connection uses (none set: the system's CAs, no client cert)."""
    tls = settings.tls
    return TLSFiles(tls.ca_file, tls.cert_file, tls.key_file)
