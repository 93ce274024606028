"""A device bundle: everything a device needs to join the fleet, in a directory or a tarball.

::

    agent.toml    the agent's settings: device id, the mqtts:// broker, the [tls] files, the
                  release-signing public key ([deploy] public_key), tags
    device.pem    the device's certificate (CN = its id), from the fleet CA
    device.key    its private key, mode 0600
    ca.pem        the fleet CA certificate: the broker's certificate is checked against it
    release.pub   the control plane's release-signing PUBLIC key (``ed25519:...``): what models
                  and desired states are checked against. Not the CA: a different key, for a
                  different job (docs/security.md)

The paths in ``agent.toml`` are where the files will be on the device (``install_dir``,
``/etc/edgefleet`` by default), not where the bundle is written. A bundle holds a private key:
it is written 0700/0600 and should travel once, by a trusted channel, to one device. Enrollment
with a token (``edgefleet-agent enroll``) avoids shipping a key at all.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from provisioning.errors import BundleError
from provisioning.files import write_atomic
from provisioning.names import check_device_id

DEFAULT_INSTALL_DIR = "/etc/edgefleet"
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


@dataclass(frozen=True)
class Bundle:
    device_id: str
    broker_url: str
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes
    release_key: str
    tags: Mapping[str, str] = field(default_factory=dict)
    install_dir: str = DEFAULT_INSTALL_DIR
    renew_url: str | None = None

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        if not self.broker_url.startswith("mqtts://"):
            raise BundleError(f"a bundle's broker must be an mqtts:// URL, not {self.broker_url!r}")
        if not self.release_key.startswith("ed25519:"):
            raise BundleError("the release key must be the control plane's `ed25519:...` text")
        if not PurePosixPath(self.install_dir).is_absolute():
            raise BundleError(f"install_dir must be an absolute path, not {self.install_dir!r}")
        for key in self.tags:
            if not key:
                raise BundleError("a tag needs a non-empty key (KEY=VALUE)")


def _toml_string(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def agent_config(bundle: Bundle) -> str:
    """The bundle's ``agent.toml`` (a test checks that the agent's settings accept it)."""
    where = PurePosixPath(bundle.install_dir)
    lines = [
        f"# edgefleet agent for {bundle.device_id}, written by `edgefleet provision device`.",
        "# Add the models it serves at first ([[models]] path = ...): rollouts replace them.",
        f"device_id = {_toml_string(bundle.device_id)}",
        f"broker = {_toml_string(bundle.broker_url)}",
    ]
    if bundle.tags:
        pairs = ", ".join(f"{_toml_string(k)} = {_toml_string(v)}" for k, v in bundle.tags.items())
        lines.append(f"tags = {{ {pairs} }}")
    lines += [
        "",
        "[tls]",
        f"ca_file = {_toml_string(str(where / 'ca.pem'))}",
        f"cert_file = {_toml_string(str(where / 'device.pem'))}",
        f"key_file = {_toml_string(str(where / 'device.key'))}",
    ]
    if bundle.renew_url:
        lines.append(f"renew_url = {_toml_string(bundle.renew_url)}")
    lines += ["", "[deploy]", f"public_key = {_toml_string(bundle.release_key)}", ""]
    return "\n".join(lines)


def files(bundle: Bundle) -> dict[str, tuple[bytes, int]]:
    """The bundle's files: name -> (content, mode)."""
    return {
        "agent.toml": (agent_config(bundle).encode(), 0o644),
        "device.pem": (bundle.cert_pem, 0o644),
        "device.key": (bundle.key_pem, 0o600),
        "ca.pem": (bundle.ca_pem, 0o644),
        "release.pub": (bundle.release_key.encode() + b"\n", 0o644),
    }


def write_bundle(bundle: Bundle, out: Path, *, overwrite: bool = False) -> Path:
    """Write the bundle to the directory ``out``, or to a tarball when ``out`` ends in ``.tar``,
    ``.tar.gz`` or ``.tgz``. An existing target is refused unless ``overwrite``."""
    if out.exists() and not overwrite:
        raise BundleError(f"{out} exists: pass another --out (a bundle is never overwritten)")
    contents = files(bundle)
    if out.name.endswith(TAR_SUFFIXES):
        _write_tar(out, bundle.device_id, contents)
        return out
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=overwrite)
        os.chmod(out, 0o700)
    except OSError as exc:
        raise BundleError(f"cannot create {out}: {exc.strerror or exc}") from None
    for name, (data, mode) in contents.items():
        write_atomic(out / name, data, mode)
    return out


def _write_tar(out: Path, device_id: str, contents: dict[str, tuple[bytes, int]]) -> None:
    buffer = io.BytesIO()
    now = time.time()
    tar = (
        tarfile.open(fileobj=buffer, mode="w")
        if out.name.endswith(".tar")
        else tarfile.open(fileobj=buffer, mode="w:gz")
    )
    with tar:
        top = tarfile.TarInfo(device_id)
        top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o700, now
        tar.addfile(top)
        for name, (data, mode) in contents.items():
            info = tarfile.TarInfo(f"{device_id}/{name}")
            info.size, info.mode, info.mtime = len(data), mode, now
            tar.addfile(info, io.BytesIO(data))
    write_atomic(out, buffer.getvalue(), 0o600)
