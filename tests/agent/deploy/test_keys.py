"""The release key from the agent's settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config import DeployConfig
from agent.deploy.keys import key_from_flag, load_release_key
from agent.errors import ConfigError
from protocol.signing import key_id, public_key_text

KEY = Ed25519PrivateKey.generate().public_key()
TEXT = public_key_text(KEY)


def test_key_from_text_file_or_none(tmp_path: Path) -> None:
    assert load_release_key(DeployConfig()) is None
    loaded = load_release_key(DeployConfig(public_key=TEXT))
    assert loaded is not None and key_id(loaded) == key_id(KEY)
    (tmp_path / "k.pub").write_text(TEXT + "\n")
    loaded = load_release_key(DeployConfig(public_key_file=tmp_path / "k.pub"))
    assert loaded is not None and key_id(loaded) == key_id(KEY)
    assert key_id(key_from_flag(TEXT)) == key_id(key_from_flag(str(tmp_path / "k.pub")))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (DeployConfig(public_key="nope"), "deploy.public_key: a release public key starts with"),
        (DeployConfig(public_key="ed25519:!!"), "deploy.public_key: not an Ed25519 public key"),
        (DeployConfig(public_key_file=Path("/nonexistent.pub")), "cannot read /nonexistent.pub"),
        (DeployConfig(public_key=TEXT, public_key_file=Path("x")), "not both"),
    ],
)
def test_bad_keys_name_the_setting(config: DeployConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_release_key(config)
