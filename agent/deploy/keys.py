"""The release public key the agent trusts: ``[deploy] public_key`` or ``public_key_file``."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.config import DeployConfig
from agent.errors import ConfigError
from protocol.signing import SignatureError, public_key_from_text


def release_key_text(value: str) -> Ed25519PublicKey:
    """Parse ``ed25519:...`` (ConfigError naming the setting when it is not a key)."""
    try:
        return public_key_from_text(value)
    except SignatureError as exc:
        raise ConfigError(f"deploy.public_key: {exc}") from None


def load_release_key(config: DeployConfig) -> Ed25519PublicKey | None:
    """The configured key, or None when none is configured (deployments are then refused)."""
    if config.public_key and config.public_key_file:
        raise ConfigError("deploy: set public_key or public_key_file, not both")
    if config.public_key:
        return release_key_text(config.public_key)
    if config.public_key_file:
        try:
            text = config.public_key_file.read_text()
        except OSError as exc:
            raise ConfigError(
                f"deploy.public_key_file: cannot read {config.public_key_file}: {exc.strerror}"
            ) from None
        try:
            return public_key_from_text(text)
        except SignatureError as exc:
            raise ConfigError(f"deploy.public_key_file {config.public_key_file}: {exc}") from None
    return None


def key_from_flag(value: str) -> Ed25519PublicKey:
    """The simulator's ``--release-key TEXT|FILE``: the key text, or a file holding it."""
    if value.strip().startswith("ed25519:"):
        return release_key_text(value)
    key = load_release_key(DeployConfig(public_key_file=Path(value)))
    assert key is not None  # a file was given
    return key
